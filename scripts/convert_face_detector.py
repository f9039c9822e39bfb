"""Convert facenet-pytorch's MTCNN weights into weights/face_detector/model.safetensors (fp16).

    pip install --no-deps facenet-pytorch==2.6.0   # its metadata pins torch<2.3: take only its files
    python scripts/convert_face_detector.py --out weights/face_detector
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file

# facenet-pytorch's layer names -> acne.face's modules (landmark head dense6_3 is not used).
NAMES = {
    "pnet": {"conv1": "body.0", "prelu1": "body.1", "conv2": "body.3", "prelu2": "body.4", "conv3": "body.5",
             "prelu3": "body.6", "conv4_1": "score", "conv4_2": "box"},
    "rnet": {"conv1": "body.0", "prelu1": "body.1", "conv2": "body.3", "prelu2": "body.4", "conv3": "body.6",
             "prelu3": "body.7", "dense4": "dense.0", "prelu4": "dense.1", "dense5_1": "score", "dense5_2": "box"},
    "onet": {"conv1": "body.0", "prelu1": "body.1", "conv2": "body.3", "prelu2": "body.4", "conv3": "body.6",
             "prelu3": "body.7", "conv4": "body.9", "prelu4": "body.10", "dense5": "dense.0", "prelu5": "dense.1",
             "dense6_1": "score", "dense6_2": "box"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="weights/face_detector", help="folder for model.safetensors")
    args = parser.parse_args()
    import facenet_pytorch

    data = Path(facenet_pytorch.__file__).parent / "data"
    state = {}
    for net, names in NAMES.items():
        for key, value in torch.load(data / f"{net}.pt", weights_only=True).items():
            layer, param = key.split(".")
            if layer in names:
                state[f"{net}.{names[layer]}.{param}"] = value.to(torch.float16).contiguous()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"source": "facenet-pytorch 2.6.0 (MIT)"})
    print(f"wrote {out / 'model.safetensors'} ({len(state)} tensors)")


if __name__ == "__main__":
    main()
