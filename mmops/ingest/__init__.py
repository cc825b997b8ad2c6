"""Ingest: landed files -> content-addressed raw data + catalog rows; bad files -> quarantine with a reason.

A domain's landing area (a local folder or an fsspec URL, see `sources`) holds files whose path relative to
it matches the domain pack's `record_pattern` (by default `<modality>/<record key>.<ext>`); files with the
same key form one multimodal record, which may lack modalities. The labels file sits at its top.

How a run goes:

1. list the entries (no reads) and skip, without reading, every path whose size and version (mtime, ETag)
   the catalog already holds: re-ingesting an unchanged landing area costs one listing and one query;
2. in batches, read, hash, decode and check files on worker threads or processes (`pool`: pure work, no
   catalog access), the next batch while the last one is committed;
3. per batch, blobs are written by the same workers under temporary names, then made durable together and
   renamed into place (by content hash: `data/raw/<domain>/<modality>/<sha[:2]>/<sha>.<ext>`; see `store`);
   then, holding the domain's writer lock (concurrent ingests of a domain are safe), quarantine copies, the
   catalog rows and one commit.

A crash at any point (kill -9 included) loses at most the uncommitted batch: its blobs may exist without rows,
and the rerun, seeing no rows, processes the same files again and writes the same rows. Reruns never
duplicate (rows are unique on path + landed hash) and never miss (a path is skipped only when its row
exists).

Bad input never stops a batch and is never dropped: each bad file's bytes are copied to
`quarantine/<domain>/` and its reason recorded (`mmops quarantine list`). Quarantine keeps the landed bytes
unchanged, PHI included: restrict it as you restrict landing/.

Modules: `sources` (landing areas), `plan` (what is new, in batches), `prepare` (one file's pure work), `pool`
(threads or worker processes for it), `store` (durable blob writes), `apply` (catalog rows under the lock),
`run` (`ingest_domain`, the loop). This package imports none of them but `sources`, so that worker processes
load only what `prepare` needs.
"""

from mmops.ingest.sources import Entry, Landing

__all__ = ["Entry", "Landing"]
