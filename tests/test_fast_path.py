"""The fast path (ONNX Runtime, the export cache, threads) against plain fp32 PyTorch, with the tiny models.

The accuracy guard on real photos with the real weights is `python scripts/benchmark.py --guard`.
"""
from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime (requirements.txt)")
pytest.importorskip("onnx", reason="exporting needs the onnx package (requirements.txt)")

from acne import fastpath, runtime
from acne.analysis import load_analyzer
from acne.config import Settings
from acne.grader import load_grader
from acne.imaging import load_image
from acne.segmenter import load_segmenter


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def analyzers(tiny_settings, cache_dir):
    plain = load_analyzer(dataclasses.replace(tiny_settings, backend="torch"))
    fast = load_analyzer(dataclasses.replace(tiny_settings, backend="onnx", cache_dir=str(cache_dir)))
    return plain, fast


def test_onnx_path_agrees_with_plain_fp32(analyzers, example_photos):
    plain, fast = analyzers
    assert (plain.segmenter.backend, plain.grader.backend) == ("torch", "torch")
    assert (fast.segmenter.backend, fast.grader.backend) == ("onnx", "onnx")
    pairs = []
    for photo in example_photos:
        reference, candidate = plain.run(photo), fast.run(photo)
        assert np.abs(reference.probability - candidate.probability).max() < 1e-3
        assert list(candidate.report.grader.level_scores.values()) == pytest.approx(
            list(reference.report.grader.level_scores.values()), abs=1e-4)
        pairs.append((reference, candidate))
    guard = runtime.agreement(pairs)
    assert guard["photos"] == len(example_photos)
    assert guard["passed"], guard
    # The predictions above ran on ONNX Runtime: the torch models were never even built.
    assert not fast.segmenter.built.module.loaded and not fast.grader.built.module.loaded


def test_a_cached_export_loads_without_building_the_torch_model(analyzers, tiny_segmenter_dir, cache_dir,
                                                                example_photo):
    _, fast = analyzers
    exported = sorted(p.name for p in cache_dir.glob("*.onnx"))
    assert any(name.startswith("unet-") for name in exported) and any(name.startswith("grader-") for name in exported)
    again = load_segmenter(tiny_segmenter_dir, size=256, backend="onnx", cache_dir=cache_dir)
    assert again.backend == "onnx" and not again.built.module.loaded           # cache hit: no smp model built
    assert sorted(p.name for p in cache_dir.glob("*.onnx")) == exported  # nothing exported again
    rgb = load_image(example_photo)
    assert np.array_equal(again.predict_maps(rgb)[0], fast.segmenter.predict_maps(rgb)[0])
    # .model still gives the torch UNet (loaded on demand) with the stored weights.
    from safetensors.torch import load_file

    stored = load_file(str(tiny_segmenter_dir / "model.safetensors"))["segmentation_head.0.weight"]
    assert np.array_equal(again.model.state_dict()["segmentation_head.0.weight"].numpy(), stored.float().numpy())


def test_changed_weights_are_exported_again(tiny_segmenter_dir, tmp_path, cache_dir):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "seg"
    shutil.copytree(tiny_segmenter_dir, folder)
    weights = load_file(str(folder / "model.safetensors"))
    weights["segmentation_head.0.bias"] = weights["segmentation_head.0.bias"] + torch.tensor(1.0).half()
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    before = set(cache_dir.glob("unet-*.onnx"))
    changed = load_segmenter(folder, size=256, backend="onnx", cache_dir=cache_dir)
    assert changed.backend == "onnx"
    assert len(set(cache_dir.glob("unet-*.onnx")) - before) == 1       # a new key, not the stale export


def test_explain_works_on_the_onnx_grader(tiny_settings, cache_dir, example_photo):
    # Its own analyzer: explaining loads the torch grader, which the other tests check is never built.
    fast = load_analyzer(dataclasses.replace(tiny_settings, backend="onnx", cache_dir=str(cache_dir)))
    heat = fast.explain(example_photo)  # needs the torch model: loaded on first use
    assert heat.shape == (640, 640) and 0.0 <= heat.min() and heat.max() <= 1.0


def test_failed_export_falls_back_to_torch(monkeypatch, tiny_segmenter_dir, tiny_grader_dir, tmp_path, caplog,
                                           example_photo):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(runtime, "export_onnx", broken)
    with caplog.at_level(logging.WARNING):
        seg = load_segmenter(tiny_segmenter_dir, size=256, backend="onnx", cache_dir=tmp_path)
        grader = load_grader(tiny_grader_dir, backend="onnx", cache_dir=tmp_path)
    assert seg.backend == "torch" and grader.backend == "torch"
    assert "exporter exploded" in caplog.text and "PyTorch" in caplog.text
    rgb = load_image(example_photo)
    assert seg.predict(rgb).mask.shape == (640, 640)
    assert sum(grader.predict(rgb).level_scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert not list(tmp_path.glob("*.onnx"))  # nothing half-written left behind


def test_a_damaged_cache_entry_is_exported_again(tiny_grader_dir, tmp_path, example_photo):
    first = load_grader(tiny_grader_dir, backend="onnx", cache_dir=tmp_path)
    (cached,) = tmp_path.glob("grader-*.onnx")
    cached.write_bytes(b"not an onnx model")
    second = load_grader(tiny_grader_dir, backend="onnx", cache_dir=tmp_path)
    assert second.backend == "onnx" and cached.stat().st_size > 1000
    rgb = load_image(example_photo)
    assert second.predict(rgb).level_scores == pytest.approx(first.predict(rgb).level_scores, abs=1e-6)


def _pair(severity_a, severity_b, mask_a, mask_b, count_a, count_b):
    def analysis(severity, mask, count):
        return SimpleNamespace(report=SimpleNamespace(severity=severity, lesions=[None] * count), mask=mask)

    return analysis(severity_a, mask_a, count_a), analysis(severity_b, mask_b, count_b)


def test_the_guard_fails_when_the_paths_disagree():
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    same = [_pair("Mild", "Mild", mask, mask.copy(), 3, 4) for _ in range(50)]
    assert runtime.agreement(same)["passed"]
    one_severity_off = same[:49] + [_pair("Mild", "Severe", mask, mask, 3, 3)]   # 98% still passes
    assert runtime.agreement(one_severity_off)["passed"]
    two_off = same[:48] + [_pair("Mild", "Severe", mask, mask, 3, 3)] * 2          # 96%
    assert not runtime.agreement(two_off)["passed"]
    shifted = np.roll(mask, 3, axis=1)
    assert runtime.mask_dice(mask, shifted) == pytest.approx(0.7)
    assert not runtime.agreement([_pair("Mild", "Mild", mask, shifted, 3, 3)] * 10)["passed"]
    counts_off = same[:47] + [_pair("Mild", "Mild", mask, mask, 3, 6)] * 3         # 94% within +-1
    assert not runtime.agreement(counts_off)["passed"]
    empty = np.zeros((20, 20), bool)
    assert runtime.mask_dice(empty, empty) == 1.0 and runtime.mask_dice(mask, empty) == 0.0
    with pytest.raises(ValueError):
        runtime.agreement([])


def test_backend_threads_and_settings(monkeypatch, tmp_path):
    assert fastpath.candidates("torch") == ["torch"] and fastpath.candidates("ONNX ") == ["onnx"]
    monkeypatch.setattr(fastpath, "_NATIVE_BF16", False)   # e.g. a Space CPU without AMX / AVX512-BF16
    assert fastpath.candidates("auto") == ["torch", "onnx"]
    monkeypatch.setattr(fastpath, "_NATIVE_BF16", True)
    assert fastpath.candidates("auto") == ["torch", "onnx", "bf16"]
    with pytest.raises(ValueError, match="ACNE_BACKEND"):
        fastpath.candidates("tensorrt")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert runtime.resolve_threads(0) == 1 and runtime.resolve_threads(3) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= runtime.resolve_threads(0) == runtime.cpu_count() <= (__import__("os").cpu_count() or 1)
    monkeypatch.setenv("ACNE_BACKEND", "torch")
    monkeypatch.setenv("ACNE_CACHE_DIR", str(tmp_path))
    settings = Settings.from_env()
    assert (settings.backend, settings.cache_dir) == ("torch", str(tmp_path))
    assert Settings().backend == "auto"


def test_auto_measures_once_keeps_the_fastest_that_passes_the_guard_and_remembers(tmp_path):
    calls = []
    speed = {("torch", False): 30.0, ("onnx", False): 20.0, ("bf16", False): 10.0,
             ("onnx", True): 15.0, ("bf16", True): 5.0}

    def measure(backend, parallel):
        calls.append((backend, parallel))
        return speed[(backend, parallel)], backend

    def guard(reference, candidate):
        return candidate != "bf16"          # bf16 is fastest but gives other answers

    key = {"cpu": "test", "threads": 2}
    choice = fastpath.choose(["torch", "onnx", "bf16"], [False, True], measure, guard, key=key, cache_dir=tmp_path)
    assert (choice.backend, choice.parallel, choice.how) == ("onnx", True, "measured")
    assert calls[0] == ("torch", False)                           # the reference first
    assert ("bf16", True) not in calls                           # side by side timed for the winner only
    assert not choice.measured["bf16"]["passed"] and choice.measured["onnx+parallel"]["models_ms"] == 15.0
    calls.clear()
    again = fastpath.choose(["torch", "onnx", "bf16"], [False, True], measure, guard, key=key, cache_dir=tmp_path)
    assert (again.backend, again.parallel, again.how) == ("onnx", True, "cached") and not calls
    other = fastpath.choose(["torch", "onnx", "bf16"], [False, True], measure, guard, key=dict(key, threads=4),
                            cache_dir=tmp_path)
    assert other.how == "measured" and calls                     # another thread count: measured anew
    forced = fastpath.choose(["torch"], [False], measure, guard, key=key, cache_dir=tmp_path)
    assert (forced.backend, forced.how) == ("torch", "forced")


def test_load_analyzer_auto_times_the_real_runners(tiny_settings, tmp_path, example_photo):
    settings = dataclasses.replace(tiny_settings, backend="auto", parallel="off", cache_dir=str(tmp_path))
    analyzer = load_analyzer(settings)
    assert analyzer.choice.how == "measured" and "torch" in analyzer.choice.measured
    assert analyzer.describe()["backend"] == analyzer.choice.backend == analyzer.segmenter.backend
    assert load_analyzer(settings).choice.how == "cached"
    assert analyzer.run(example_photo).report.severity is not None


def test_bad_backend_name_stops_loading(tiny_settings):
    with pytest.raises(ValueError, match="ACNE_BACKEND"):
        load_analyzer(dataclasses.replace(tiny_settings, backend="gpu"))


def test_warm_cache_grader_needs_no_image_processor(tiny_grader_dir, tmp_path, example_photo):
    import torch

    first = load_grader(tiny_grader_dir, backend="onnx", cache_dir=tmp_path)
    assert first.built.spec is not None      # the light preprocessing reproduced the processor exactly
    warm = load_grader(tiny_grader_dir, backend="onnx", cache_dir=tmp_path)
    assert warm.backend == "onnx" and warm.built.spec == first.built.spec
    assert not warm.built.processor.loaded and not warm.built.module.loaded and warm.labels == first.labels
    rgb = load_image(example_photo)
    for image in (rgb, np.ascontiguousarray(rgb[100:400]), np.ascontiguousarray(rgb[:, :333])):
        # Bit for bit what transformers' processor gives (loaded here on demand, for the comparison).
        assert torch.equal(warm.inputs(image), warm.processor(images=__import__("PIL.Image").Image.fromarray(image),
                                                                return_tensors="pt")["pixel_values"])
    assert warm.predict(rgb).level_scores == pytest.approx(first.predict(rgb).level_scores, abs=1e-6)


def test_a_warm_start_imports_neither_transformers_nor_smp(tiny_model_env, tmp_path, example_photo):
    """A fresh process with a warm cache: the analyzer runs without transformers, torchvision or smp."""
    import subprocess
    import sys

    from conftest import PROJECT_DIR

    code = (
        "import sys, acne\n"
        "acne.load_analyzer().analyze(sys.argv[1])\n"
        "print(sorted(m for m in ('transformers', 'torchvision', 'segmentation_models_pytorch', 'timm')"
        " if m in sys.modules))\n"
    )
    env = dict(tiny_model_env, ACNE_CACHE_DIR=str(tmp_path), ACNE_BACKEND="onnx",
               ACNE_GRADER="nobody/not-in-the-cache")  # as shipped: a Hub id first, offline, then the folder
    runs = [subprocess.run([sys.executable, "-c", code, str(example_photo)], cwd=PROJECT_DIR, env=env,
                           capture_output=True, text=True, timeout=300) for _ in range(2)]
    for done in runs:
        assert done.returncode == 0, done.stderr
    assert "transformers" in runs[0].stdout          # the first start exports (and needs them)
    assert runs[1].stdout.strip() == "[]", runs[1].stdout + runs[1].stderr


def test_bf16_backend_runs_the_unet_encoder_and_the_grader_in_bfloat16(tiny_settings, example_photo):
    """Where bf16 is native it is the default (the guard holds on the shipped weights, see
    scripts/benchmark.py --guard); the UNet's finest decoder blocks stay fp32, where lesion centres are read."""
    import torch

    analyzer = load_analyzer(dataclasses.replace(tiny_settings, backend="bf16"))
    segmenter, grader = analyzer.segmenter, analyzer.grader
    assert (segmenter.backend, grader.backend) == ("bf16", "bf16")
    unet, classifier = segmenter.runner.module, grader.runner.module
    assert {p.dtype for p in unet.encoder.parameters()} == {torch.bfloat16}
    blocks = unet.decoder.blocks
    assert {p.dtype for block in blocks[:3] for p in block.parameters()} == {torch.bfloat16}
    assert {p.dtype for block in blocks[3:] for p in block.parameters()} == {torch.float32}
    assert {p.dtype for p in unet.segmentation_head.parameters()} == {torch.float32}
    # Autocast; the weights it would cast on every call (linear, conv) are stored in bf16, norms stay fp32.
    linear = {m.weight.dtype for m in classifier.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    norms = {m.weight.dtype for m in classifier.modules() if isinstance(m, torch.nn.LayerNorm)}
    assert (linear, norms) == ({torch.bfloat16}, {torch.float32})
    plain = load_analyzer(dataclasses.replace(tiny_settings, backend="torch"))
    fast, reference = analyzer.run(example_photo), plain.run(example_photo)
    assert fast.probability.dtype == np.float32 and np.isfinite(fast.probability).all()
    assert fast.probability.shape == reference.probability.shape
    # Rounding, not a different network: the maps and the scores stay close.
    assert np.abs(fast.probability - reference.probability).mean() < 0.01
    scores, fast_scores = reference.report.grader.level_scores, fast.report.grader.level_scores
    assert max(abs(scores[k] - fast_scores[k]) for k in scores) < 0.05
    assert np.isfinite(grader.explain(load_image(example_photo))).all()   # the heat map works in bf16


def test_bf16_weights_stored_once_give_the_logits_autocast_gives(tiny_grader_dir, example_photo):
    """Storing the matmul weights in bf16 is a speed-up only: bit for bit what autocast over fp32 weights gives."""
    import torch
    from transformers import AutoModelForImageClassification

    grader = load_grader(tiny_grader_dir, backend="bf16")
    pixels = grader.inputs(load_image(example_photo))
    plain = AutoModelForImageClassification.from_pretrained(tiny_grader_dir, local_files_only=True).float().eval()
    plain.set_attn_implementation(grader.runner.module.config._attn_implementation)   # the kernel it timed fastest
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = plain(pixel_values=pixels).logits.float()
        got = grader.runner.forward(pixels).logits.float()
        fp32 = plain(pixel_values=pixels).logits
    assert torch.equal(got, expected)
    assert not torch.equal(got, fp32)    # and it did run in bf16


def test_parallel_mode_is_a_thread_split_only(tiny_settings, example_photos, monkeypatch):
    """ACNE_PARALLEL: both models at once, each on half the threads; the same reports as one after the other."""
    assert fastpath.parallel_modes("auto", 2) == [False, True] and fastpath.parallel_modes("on", 4) == [True]
    assert fastpath.parallel_modes("auto", 1) == [False] and fastpath.parallel_modes("off", 8) == [False]
    with pytest.raises(ValueError, match="ACNE_PARALLEL"):
        fastpath.parallel_modes("sometimes", 2)
    monkeypatch.setenv("ACNE_PARALLEL", "off")
    assert Settings.from_env().parallel == "off" and Settings().parallel == "auto"

    settings = dataclasses.replace(tiny_settings, backend="torch", torch_threads=2)
    one_by_one = load_analyzer(dataclasses.replace(settings, parallel="off"))
    at_once = load_analyzer(dataclasses.replace(settings, parallel="on"))
    assert not one_by_one.parallel and at_once.parallel
    for photo in example_photos:
        a, b = one_by_one.run(photo), at_once.run(photo)
        assert np.abs(a.probability - b.probability).max() < 1e-4
        assert [lesion.box for lesion in a.report.lesions] == [lesion.box for lesion in b.report.lesions]
        assert b.report.grader.level_scores == pytest.approx(a.report.grader.level_scores, abs=1e-5)
        assert b.report.timings_ms["models"] <= b.report.timings_ms["total"]

    def broken(_rgb):
        raise RuntimeError("grader failed")

    monkeypatch.setattr(at_once.grader, "grade", broken)   # a worker's error reaches the caller
    with pytest.raises(RuntimeError, match="grader failed"):
        at_once.run(example_photos[0])


def test_bf16_attention_runs_on_the_kernel_timed_fastest_and_remembers_it(tiny_count_grader_dir, tmp_path,
                                                                           example_photo):
    """Fused attention (SDPA) or plain matmuls: which is faster in bf16 depends on the CPU, so the first start
    times both and stores the answer; a later start takes it from the wisdom file without timing again."""
    import json

    import torch

    from acne.grader import fixed_input_example
    from acne.models import load_classifier

    model = load_classifier(str(tiny_count_grader_dir))
    example = fixed_input_example(model)
    first = fastpath.make_runner(model, "bf16", threads=1, cache_dir=tmp_path, example=example)
    wisdom_file = tmp_path / fastpath.WISDOM_FILE
    wisdom = json.loads(wisdom_file.read_text())
    [(key, entry)] = [(k, v) for k, v in wisdom.items() if json.loads(k).get("what") == "attention"]
    assert entry["attention"] in fastpath.ATTENTION and set(entry["measured_ms"]) == set(fastpath.ATTENTION)
    assert first.module.config._attn_implementation == entry["attention"]

    other = next(kernel for kernel in fastpath.ATTENTION if kernel != entry["attention"])
    wisdom[key] = {"attention": other, "measured_ms": {}}
    wisdom_file.write_text(json.dumps(wisdom))
    second = fastpath.make_runner(model, "bf16", threads=1, cache_dir=tmp_path, example=example)
    assert second.module.config._attn_implementation == other     # taken from the file, not timed again
    assert json.loads(wisdom_file.read_text())[key]["measured_ms"] == {}
    # Both kernels compute the same network: counts agree up to bf16 rounding.
    pixels = model.preprocess(load_image(example_photo))
    a, b = first(pixels)["density"].sum(), second(pixels)["density"].sum()
    assert torch.isclose(a, b, rtol=0.02), (a, b)


def test_a_bf16_unet_has_no_attention_to_time(tiny_segmenter_dir, tmp_path):
    from acne.models import load_unet

    runner = fastpath.make_runner(load_unet(str(tiny_segmenter_dir)), "bf16", threads=1, cache_dir=tmp_path,
                                  example=np.zeros((1, 3, 64, 64), np.float32))
    assert runner.backend == "bf16" and not (tmp_path / fastpath.WISDOM_FILE).exists()


def test_freed_memory_is_kept_for_reuse_on_glibc():
    """Large tensors freed by one inference are reused by the next instead of being mapped afresh (glibc)."""
    import platform

    assert runtime.keep_freed_memory() is (platform.libc_ver()[0] == "glibc")
    assert runtime.keep_freed_memory() is runtime.keep_freed_memory()   # idempotent
