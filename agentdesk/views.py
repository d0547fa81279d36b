"""The project's own pages: where a person lands after logging in."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from reviews import selectors


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Reviewers land in their inbox; everyone else on the runs list."""
    if selectors.queue_ids_decidable(user=request.user):
        return redirect("reviews:inbox")
    return redirect("runs:list")
