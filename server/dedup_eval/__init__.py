"""Evaluation harness: duplicate-decision quality measured through the real gRPC API (make eval)."""
