from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    name = "reviews"
    verbose_name = "Reviews"

    def ready(self) -> None:
        # The configuration service refuses versions naming queues that do not exist; it
        # asks through this lookup, since agentdesk may not import reviews.
        from releases.configuration import queue_lookup_register
        from reviews.selectors import queue_slugs_existing
        from reviews.services.opening import request_open
        from runs.kernel.approvals import register_opener

        queue_lookup_register(queue_slugs_existing)
        # The runtime opens approval requests through its seam (runs.kernel.approvals); this app
        # is the one that opens them. Without it installed, a review fails loudly.
        register_opener(request_open)
