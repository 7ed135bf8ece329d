"""Load and fault tooling for the dedup service: `make load` (python -m dedup_load) and `make chaos`
(python -m dedup_load.chaos). Both start their own stack on free ports unless given --target."""
