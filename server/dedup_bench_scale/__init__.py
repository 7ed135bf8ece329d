"""`make bench-scale`: the service's index and FindDuplicateGroups at a million images, on a stack of its own.

Milvus 2.3.5 standalone (dedup_stack) on free ports and a data dir of its own; the collection has the service's
schema. N vectors of the served model's dimension are loaded **through pymilvus, as a benchmark shortcut**:
IndexStream of images is the API, and a million images would take hours of model time here.

The vectors are labelled in the output:

* **real**: embeddings of the real photos of the evaluation corpus (the served ONNX file through ONNX Runtime,
  decoded as the front decodes), stored with their signatures, plus one edit of each (a planted duplicate);
* **queries**: two more edits of each real photo (a light re-encode, a heavy crop/flip/exposure edit): hit@1 is
  the index's top hit against the exact (FLAT, numpy) top hit over the whole collection;
* **background**: synthetic unit vectors from a Gaussian in a PCA subspace fitted to the real embeddings, its
  spread scaled so that the top-1 neighbour similarity among as many background vectors as real photos matches
  that of the real photos (the fitted vs real quantiles are printed).

Measured per index type (HNSW, IVF_SQ8, IVF_PQ; a small search-parameter sweep each): insert rows/s, index
build time, Milvus resident memory, search p50/p99 at concurrency 1 and 32, hit@1; for the shipped default index
also FindDuplicateGroups through the service's own code (a child process: its time and peak RSS). The last line
is one JSON object.
"""
