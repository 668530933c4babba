"""Webhook delivery: the worker that fans outbox events out to webhooks and sends them, and the HTTP
sender it uses."""

from haldir.webhooks.sender import HttpSender, Sent
from haldir.webhooks.worker import DeliveryWorker

__all__ = ["DeliveryWorker", "HttpSender", "Sent"]
