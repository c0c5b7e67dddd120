"""Reviewer pages over the call logs (list, call timeline, recording, JSON, CSV, KPI dashboard) and their
access control."""

from app.review.routes import build_review_router

__all__ = ["build_review_router"]
