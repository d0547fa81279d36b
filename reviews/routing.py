from django.urls import path

from reviews.consumers import QueueConsumer

websocket_urlpatterns = [
    path("ws/queues/<int:queue_id>/", QueueConsumer.as_asgi()),
]
