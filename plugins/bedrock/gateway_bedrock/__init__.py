"""AWS Bedrock fine-tuning for finetune-gateway, with training files staged in S3."""

from gateway_bedrock.provider import BedrockProvider

__all__ = ["BedrockProvider"]
