"""Cloud entry points: the AWS Lambda handler (``darts_export.cloud.handler``) and its request model."""

from darts_export.cloud.lambda_handler import handler

__all__ = ["handler"]
