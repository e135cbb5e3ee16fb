"""Google Vertex AI provider for finetune-gateway: Gemini tuning jobs, files staged on GCS."""

from gateway_vertex.provider import VertexProvider

__all__ = ["VertexProvider"]
