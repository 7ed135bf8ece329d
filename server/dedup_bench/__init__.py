"""`make bench`: the service's throughput and latency, measured end to end on real photos in one run.

It starts its own stack (Milvus standalone, Triton, the gRPC front) on free ports, writes ~600 distinct
640x480 JPEGs made from real photos, and measures in the same run, so every ratio compares numbers taken under
the same machine load:

* ``model_img_s``: the served ONNX file through ONNX Runtime directly, same batch size as the front's batcher;
* ``ingest_img_s``: IndexStream end to end (client -> front -> decode -> Triton -> Milvus), median of runs;
* ``naive_img_s``: a seed-style loop, one image at a time: decode -> Triton -> Milvus insert;
* CheckDuplicate latency at concurrency 1 and 32, and the model's own single-image latency;
* Milvus search latency at 10k and 100k vectors, and index parameters ranked by hit@1 against exact search.

The last line it prints is one JSON object with every number (see report.py for the keys).
"""
