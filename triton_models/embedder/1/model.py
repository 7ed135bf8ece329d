"""Triton python-backend model: ONNX Runtime (CPU) behind dynamic batching.

Serves the model.onnx that `python -m dedup_modelbuild` writes next to this file. Triton hands
execute() a list of requests merged by the dynamic batcher; they run as one ONNX Runtime call and the
results are split back by offset. A request that is malformed gets its own error response while the
others are answered. Imports only numpy, onnxruntime, json and triton_python_backend_utils because the
python-backend stub runs this file in the serving environment (no torch there).
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"


def _error(message, code_name="INVALID_ARG"):
    # Error codes on TritonError exist from python backend r23.06; fall back to a plain error before.
    code = getattr(pb_utils.TritonError, code_name, None)
    if code is None:
        return pb_utils.TritonError(message)
    return pb_utils.TritonError(message, code)


def _parameter(model_config, key, default):
    entry = model_config.get("parameters", {}).get(key)
    if not entry:
        return default
    return entry.get("string_value", default)


class TritonPythonModel:
    def initialize(self, args):
        model_config = json.loads(args["model_config"])
        input_config = pb_utils.get_input_config_by_name(model_config, INPUT_NAME)
        output_config = pb_utils.get_output_config_by_name(model_config, OUTPUT_NAME)
        self.image_shape = tuple(int(d) for d in input_config["dims"])
        self.embedding_dim = int(output_config["dims"][0])
        self.output_dtype = pb_utils.triton_string_to_numpy(output_config["data_type"])

        options = ort.SessionOptions()
        # 0 lets ONNX Runtime use one thread per physical core.
        options.intra_op_num_threads = int(_parameter(model_config, "intra_op_threads", "0"))
        options.inter_op_num_threads = 1
        # No busy-waiting between and inside runs: on a host shared with the front's decoders and Milvus, spinning
        # threads burn the cores those need (measured on 2 busy cores: 16.4 -> 12.9 CPU-ms per image, +25 % img/s).
        spinning = _parameter(model_config, "ort_allow_spinning", "0")
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model_path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])

        (session_input,) = self.session.get_inputs()
        (session_output,) = self.session.get_outputs()
        if session_input.name != INPUT_NAME or session_output.name != OUTPUT_NAME:
            raise pb_utils.TritonModelException(
                f"{model_path} has input {session_input.name!r} / output {session_output.name!r}, "
                f"expected {INPUT_NAME!r} / {OUTPUT_NAME!r}"
            )
        if session_output.shape[-1] != self.embedding_dim:
            raise pb_utils.TritonModelException(
                f"{model_path} gives {session_output.shape[-1]}-d embeddings but config.pbtxt says "
                f"{self.embedding_dim}: re-run `python -m dedup_modelbuild`"
            )
        pb_utils.Logger.log_info(
            f"embedder: {_parameter(model_config, 'model_id', '?')} version "
            f"{_parameter(model_config, 'model_version', '?')}, {self.embedding_dim}-d, "
            f"intra_op_threads={options.intra_op_num_threads}, allow_spinning={spinning}"
        )

    def _check(self, images):
        if images is None:
            return f"missing input {INPUT_NAME!r}"
        if images.dtype != np.uint8:
            return f"{INPUT_NAME!r} must be UINT8, got {images.dtype}"
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape or images.shape[0] < 1:
            expected = ", ".join(str(d) for d in self.image_shape)
            return f"{INPUT_NAME!r} must have shape [N, {expected}], got {list(images.shape)}"
        return None

    def execute(self, requests):
        responses = [None] * len(requests)
        batch, owners = [], []
        for index, request in enumerate(requests):
            tensor = pb_utils.get_input_tensor_by_name(request, INPUT_NAME)
            images = None if tensor is None else tensor.as_numpy()
            problem = self._check(images)
            if problem is not None:
                responses[index] = pb_utils.InferenceResponse(output_tensors=[], error=_error(problem))
                continue
            batch.append(images)
            owners.append(index)

        if batch:
            merged = batch[0] if len(batch) == 1 else np.concatenate(batch, axis=0)
            try:
                (embeddings,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: merged})
            except Exception as exc:  # noqa: BLE001 - every request of the batch must get an answer
                for index in owners:
                    responses[index] = pb_utils.InferenceResponse(
                        output_tensors=[], error=_error(f"inference failed: {exc}", "INTERNAL")
                    )
                return responses
            if embeddings.shape != (merged.shape[0], self.embedding_dim):
                message = f"model returned shape {list(embeddings.shape)} for {merged.shape[0]} images"
                for index in owners:
                    responses[index] = pb_utils.InferenceResponse(output_tensors=[], error=_error(message, "INTERNAL"))
                return responses
            embeddings = embeddings.astype(self.output_dtype, copy=False)
            offset = 0
            for images, index in zip(batch, owners):
                count = images.shape[0]
                part = np.ascontiguousarray(embeddings[offset : offset + count])
                offset += count
                responses[index] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT_NAME, part)])
        return responses

    def finalize(self):
        self.session = None
