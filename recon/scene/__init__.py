"""The scene graph: cameras, views and the assets made from them (see graph.py)."""
