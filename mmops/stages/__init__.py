"""The stages, one module per group: data (pull, ingest), labels, dataset (the gate and the build), train,
evaluate (and the registry's decisions), deploy (package, reload) and monitor. Each stage takes a domain,
reads its inputs from the catalog and the project folders, writes its outputs under artifacts/<domain>/,
records what it did in the catalog, and returns its typed result (stages/results.py; JSON only at the faces). Stages are idempotent:
re-running one on unchanged input changes nothing of substance. mmops.pipeline names them for the faces.
"""
