from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    name = "reviews"
    verbose_name = "Reviews"

    def ready(self) -> None:
        # The configuration service refuses versions naming queues that do not exist; it
        # asks through this lookup, since agentdesk may not import reviews.
        from agentdesk.configuration import queue_lookup_register
        from reviews.selectors import queue_slugs_existing

        queue_lookup_register(queue_slugs_existing)
