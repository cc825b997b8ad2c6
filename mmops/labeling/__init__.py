"""Labeling: label files, labeling functions (rules), model pre-labels, the review queue and the Label Studio
round trip. Every label keeps its provenance; see `store` for how one label per record is chosen."""

from mmops.labeling.files import LabelSummary, import_labels, read_label_file
from mmops.labeling.store import TRUSTED_KINDS, Resolved, put_label, report, resolve

__all__ = ["TRUSTED_KINDS", "LabelSummary", "Resolved", "import_labels", "put_label", "read_label_file", "report",
           "resolve"]
