"""Evaluation metrics (pure Python / numpy; no models): retrieval ranks, QA accuracy, caption scores."""

from lib.metrics.caption import coco_scores, python_scores
from lib.metrics.qa import accuracy, accuracy_by_type, mc_accuracy, qa_report
from lib.metrics.retrieval import rank_summary, retrieval_metrics, t2v_ranks, v2t_ranks

__all__ = [
    "accuracy",
    "accuracy_by_type",
    "coco_scores",
    "mc_accuracy",
    "python_scores",
    "qa_report",
    "rank_summary",
    "retrieval_metrics",
    "t2v_ranks",
    "v2t_ranks",
]
