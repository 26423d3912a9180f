"""Build scene folders in each supported layout from a synthetic scene with known cameras.

The builders write files the way each dataset's own tools do (formats and
names from their documentation), independently of recon's exporters, so that
importing them tests recon's readers against the layouts themselves.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from recon.io import import_scene
from recon.scene.camera import (
    compose_projection,
    opengl_from_world_to_camera,
    quaternion_from_rotation,
    transform_world_to_camera,
)
from recon.scene.graph import SceneGraph


def truth(synthetic: Path) -> SceneGraph:
    """The synthetic scene's cameras (normalised frame) and ``to_dataset``."""
    return import_scene(synthetic)


def dataset_cameras(synthetic: Path) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    """(K, world_to_camera in the dataset frame, width, height) per view."""
    graph = truth(synthetic)
    out = []
    for view in graph.views():
        cam = graph.camera_of(view)
        out.append((cam.K, transform_world_to_camera(cam.world_to_camera, graph.to_dataset), cam.width, cam.height))
    return out


def build_transforms(synthetic: Path, root: Path, per_frame: bool = False, angle: bool = False) -> Path:
    """nerfstudio transforms.json with OpenGL camera-to-world matrices and images/ beside it."""
    root.mkdir(parents=True)
    shutil.copytree(synthetic / "image", root / "images")
    cams = dataset_cameras(synthetic)
    K, _, w, h = cams[0]
    meta: dict = {"camera_model": "OPENCV", "aabb_scale": 4}
    shared = {"w": w, "h": h}
    if angle:
        shared["camera_angle_x"] = float(2 * np.arctan(0.5 * w / K[0, 0]))
    else:
        shared.update(fl_x=K[0, 0], fl_y=K[1, 1], cx=K[0, 2], cy=K[1, 2])
    if not per_frame:
        meta.update(shared)
    frames = []
    for i, (_, w2c, _, _) in enumerate(cams):
        frame = {"file_path": f"images/{i:06d}.png", "transform_matrix": opengl_from_world_to_camera(w2c).tolist()}
        if per_frame:
            frame.update(shared)
        frames.append(frame)
    meta["frames"] = frames
    (root / "transforms.json").write_text(json.dumps(meta, indent=2))
    return root


def build_colmap(synthetic: Path, root: Path, binary: bool = False, points: int = 50) -> Path:
    """COLMAP text model in sparse/0 (PINHOLE), optionally converted to binary by pycolmap."""
    model = root / "sparse" / "0"
    model.mkdir(parents=True)
    shutil.copytree(synthetic / "image", root / "images")
    cams = dataset_cameras(synthetic)
    K, _, w, h = cams[0]
    (model / "cameras.txt").write_text(f"1 PINHOLE {w} {h} {K[0, 0]} {K[1, 1]} {K[0, 2]} {K[1, 2]}\n")
    lines = []
    for i, (_, w2c, _, _) in enumerate(cams):
        q, t = quaternion_from_rotation(w2c[:3, :3]), w2c[:3, 3]
        lines += [f"{i + 1} {q[0]} {q[1]} {q[2]} {q[3]} {t[0]} {t[1]} {t[2]} 1 {i:06d}.png", ""]
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(points, 3)) * 30 + np.array([-12.5, 40.0, 610.0])
    (model / "points3D.txt").write_text("".join(f"{k + 1} {p[0]} {p[1]} {p[2]} 200 100 50 0.5\n"
                                                for k, p in enumerate(pts)))
    if binary:
        to_binary(model)
    return root


def transpose_rotations(root: Path) -> None:
    """Store every camera of the text model under ``root`` with its rotation transposed (its quaternion conjugated,
    the translation kept): a defect seen in a real capture's copy."""
    images = root / "sparse" / "0" / "images.txt"
    lines = images.read_text().splitlines()
    for i in range(0, len(lines), 2):  # IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, then the 2D points' line
        f = lines[i].split()
        f[2:5] = [str(-float(v)) for v in f[2:5]]
        lines[i] = " ".join(f)
    images.write_text("\n".join(lines) + "\n")


def to_binary(model: Path) -> None:
    """Replace the COLMAP text model in ``model`` by the binary one pycolmap writes (with its rigs and frames)."""
    import pycolmap

    rec = pycolmap.Reconstruction(str(model))
    for f in model.iterdir():
        f.unlink()
    rec.write_binary(str(model))


def build_rectified(synthetic: Path, root: Path, scan: int = 24, calibration: str = "cal18") -> Path:
    """DTU's own layout: Rectified/scanN/rect_*_3_r5000.png, Calibration/cal18/pos_*.txt, idrmasks."""
    scene = root / "Rectified" / f"scan{scan}"
    scene.mkdir(parents=True)
    masks = root / "idrmasks" / f"scan{scan}" / "mask"
    masks.mkdir(parents=True)
    for i, (K, w2c, _, _) in enumerate(dataset_cameras(synthetic)):
        shutil.copy(synthetic / "image" / f"{i:06d}.png", scene / f"rect_{i + 1:03d}_3_r5000.png")
        shutil.copy(synthetic / "image" / f"{i:06d}.png", scene / f"rect_{i + 1:03d}_0_r5000.png")
        shutil.copy(synthetic / "mask" / f"{i:03d}.png", masks / f"{i:03d}.png")
        if calibration == "cal18":
            cal = root / "Calibration" / "cal18"
            cal.mkdir(parents=True, exist_ok=True)
            P = 2.5 * compose_projection(K, w2c)  # DTU's matrices are defined up to scale
            np.savetxt(cal / f"pos_{i + 1:03d}.txt", P)
        else:
            cams = root / "Cameras"
            cams.mkdir(exist_ok=True)
            text = "extrinsic\n" + "\n".join(" ".join(repr(float(x)) for x in r) for r in w2c) + "\n\nintrinsic\n"
            text += "\n".join(" ".join(repr(float(x)) for x in r) for r in K) + "\n\n425 2.5\n"
            (cams / f"{i:08d}_cam.txt").write_text(text)
    return scene


def build_spare(synthetic: Path, root: Path, scene_name: str = "Amplifier", inputs=(1, 4, 7), tests=(2, 9)) -> Path:
    """SpaRe layout: split JSON, synth_calibration/pos_*.txt, the scene's input views only."""
    root.mkdir(parents=True, exist_ok=True)
    split = {scene_name: {"input_views": list(inputs), "test_views": list(tests), "dataset": "SpaRe"}}
    (root / "Track1_split_development.json").write_text(json.dumps(split))
    cal = root / "synth_calibration" / "calibration"
    cal.mkdir(parents=True)
    scene = root / scene_name
    scene.mkdir()
    for i, (K, w2c, _, _) in enumerate(dataset_cameras(synthetic)):
        np.savetxt(cal / f"pos_{i + 1:03d}.txt", compose_projection(K, w2c))
        if i in inputs:
            shutil.copy(synthetic / "image" / f"{i:06d}.png", scene / f"cam_{i + 1:03d}_3_0000.png")
    return scene


def build_images(synthetic: Path, root: Path) -> Path:
    shutil.copytree(synthetic / "image", root / "images")
    return root


def tiny_img2img_pipeline(folder: Path) -> Path:
    """A Stable Diffusion image-to-image pipeline with random weights and tiny layers, saved in folder/pipeline."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                norm_num_groups=8, attention_head_dim=2)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=32)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                        num_hidden_layers=1,
                                        vocab_size=100, max_position_embeddings=77, projection_dim=16))
    words = folder / "tokenizer-files"
    words.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}
    (words / "vocab.json").write_text(json.dumps(vocab))
    (words / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(words / "vocab.json"), str(words / "merges.txt"), model_max_length=77)
    pipe = StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                          scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    out = folder / "pipeline"
    pipe.save_pretrained(out)
    return out


def write_llff(root: Path, c2w_llff: list[np.ndarray], full_size: tuple[int, int], focal: float, factor: int,
               bounds: tuple[float, float] = (1.0, 10.0), masks: bool = False) -> Path:
    """An LLFF capture as LLFF's imgs2poses writes it: poses_bounds.npy for the full-size photos, and
    images_{factor}/ (random pixels) N times smaller; ``c2w_llff`` [3, 4] per view, axes (down, right, back)."""
    from PIL import Image

    width, height = full_size
    folder = root / (f"images_{factor}" if factor > 1 else "images")
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i, c2w in enumerate(c2w_llff):
        hwf = np.array([[height], [width], [focal]], dtype=np.float64)
        rows.append(np.concatenate([np.concatenate([c2w, hwf], 1).ravel(), bounds]))
        pixels = rng.integers(0, 256, (height // factor, width // factor, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"IMG_{i:04d}.JPG")
        if masks:
            mask_dir = root / (f"masks_{factor}" if factor > 1 else "masks")
            mask_dir.mkdir(exist_ok=True)
            mask = np.full((height // factor, width // factor), 255, np.uint8)
            Image.fromarray(mask).save(mask_dir / f"IMG_{i:04d}.png")
    np.save(root / "poses_bounds.npy", np.stack(rows))
    return root


def build_llff(synthetic: Path, root: Path) -> Path:
    """The synthetic scene as an LLFF capture: its images as images/, poses_bounds.npy in LLFF's axes."""
    root.mkdir(parents=True)
    shutil.copytree(synthetic / "image", root / "images")
    rows = []
    for K, w2c, w, h in dataset_cameras(synthetic):
        c2w = np.linalg.inv(w2c)
        pose = np.stack([c2w[:3, 1], c2w[:3, 0], -c2w[:3, 2], c2w[:3, 3], [h, w, K[0, 0]]], 1)  # down, right, back
        rows.append(np.concatenate([pose.ravel(), [100.0, 1000.0]]))
    np.save(root / "poses_bounds.npy", np.stack(rows))
    return root
