"""The platform process: one asyncio loop hosting every mock behind one HTTP gateway and gRPC."""
