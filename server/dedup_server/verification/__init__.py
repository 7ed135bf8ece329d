"""Geometric verification: instance-level evidence for candidates whose cosine alone cannot decide.

Pooled CNN embeddings rank copies well but also score *other photos of the same subject* high (two photos of one
tiger, two frames of one shoot). Copies, crops and re-encodes keep the geometry of the original; look-alikes do
not. So each stored image keeps a small grey signature (signature.py) beside its vector, and a candidate whose
similarity lies in the calibrated band is verified by matching local features between the query and that
signature (geometry.py); the rule (rule.py) turns the evidence into a decision.
"""
