"""The paper's figures, keyed by task (ANLI by round and split), and where ours measure
something else."""

from __future__ import annotations

from ssmix.methods import PHASE2_CONTROL

# docs/method.md §4: the paper's Table 2 (and Table B.1 for UNK), accuracy %, by task and method. The
# paper's TREC-f is 47 classes (docs/method.md §3): its figures sit beside trec-fine-47 only, never
# beside our 50-class trec-fine; ANLI's are per round and split (anli dev_r1 ...).
PAPER: dict[str, dict[str, float]] = {
    "sst2": {"none": 92.96, "embedmix": 93.03, "tmix": 93.03, "ssmix": 93.10,
             "ssmix-nosal": 93.12, "ssmix-nosal-nospan": 93.14, "unk": 93.10},
    "qqp": {"none": 91.32, "embedmix": 91.36, "tmix": 91.34, "ssmix": 91.43,
            "ssmix-nosal": 91.32, "ssmix-nosal-nospan": 91.32, "unk": 91.33},
    "mnli": {"none": 84.27, "embedmix": 84.35, "tmix": 84.33, "ssmix": 84.54,
             "ssmix-nosal": 84.48, "ssmix-nosal-nospan": 84.54, "unk": 84.46},
    "qnli": {"none": 91.28, "embedmix": 91.43, "tmix": 91.40, "ssmix": 91.54,
             "ssmix-nosal": 91.29, "ssmix-nosal-nospan": 91.45, "unk": 91.45},
    "rte": {"none": 65.56, "embedmix": 67.73, "tmix": 66.86, "ssmix": 67.22,
            "ssmix-nosal": 67.00, "ssmix-nosal-nospan": 66.93, "unk": 66.86},
    "mrpc": {"none": 86.37, "embedmix": 86.72, "tmix": 86.42, "ssmix": 86.57,
             "ssmix-nosal": 86.42, "ssmix-nosal-nospan": 86.37, "unk": 86.62},
    "trec-coarse": {"none": 97.08, "embedmix": 97.44, "tmix": 97.52, "ssmix": 97.60,
                    "ssmix-nosal": 97.44, "ssmix-nosal-nospan": 97.40, "unk": 97.44},
    "trec-fine-47": {"none": 86.68, "embedmix": 90.04, "tmix": 90.16, "ssmix": 90.24,
                     "ssmix-nosal": 89.56, "ssmix-nosal-nospan": 89.20, "unk": 89.24},
    "anli dev_r1": {"none": 56.40, "embedmix": 56.78, "tmix": 56.68, "ssmix": 57.26,
                    "ssmix-nosal": 57.04, "ssmix-nosal-nospan": 56.74, "unk": 56.98},
    "anli dev_r2": {"none": 47.10, "embedmix": 47.84, "tmix": 47.58, "ssmix": 48.36,
                    "ssmix-nosal": 48.22, "ssmix-nosal-nospan": 47.52, "unk": 47.86},
    "anli dev_r3": {"none": 47.62, "embedmix": 47.67, "tmix": 47.78, "ssmix": 47.78,
                    "ssmix-nosal": 47.95, "ssmix-nosal-nospan": 47.77, "unk": 47.98},
    "anli test_r1": {"none": 57.16, "embedmix": 57.16, "tmix": 57.28, "ssmix": 57.34,
                     "ssmix-nosal": 57.16, "ssmix-nosal-nospan": 57.20, "unk": 57.26},
    "anli test_r2": {"none": 47.36, "embedmix": 47.42, "tmix": 47.90, "ssmix": 48.06,
                     "ssmix-nosal": 47.94, "ssmix-nosal-nospan": 47.90, "unk": 48.36},
    "anli test_r3": {"none": 48.00, "embedmix": 48.00, "tmix": 48.42, "ssmix": 48.00,
                     "ssmix-nosal": 48.07, "ssmix-nosal-nospan": 48.00, "unk": 48.32},
}
# Where our protocol differs from the paper's so much that its figure measures something else,
# the report prints no paper number, and says why.
NOT_COMPARABLE = {
    "trec-fine": "50 classes; the paper's TREC-f has 47 (run trec-fine-47 to compare)",
}

def paper_value(method: str, column: str) -> float | None:
    """The paper's figure for a row (a method, maybe with its mix ratio) and a column (a task, or
    ANLI's round and split), or None where the paper has none or measured something else."""
    if column.split(" ")[0] in NOT_COMPARABLE or method == PHASE2_CONTROL:
        return None
    return PAPER.get(column, {}).get(method.split(" ")[0])
