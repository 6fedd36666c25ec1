"""Integrations with libraries built on Paddle: ``paddle_ops.integrations.paddleformers``."""
