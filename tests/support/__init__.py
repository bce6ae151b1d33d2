"""Test support: small real ONNX models and a real `ferry serve` process on loopback."""
