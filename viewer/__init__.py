"""The web viewer (viser) that reads a scene graph; see the viewer issue."""
