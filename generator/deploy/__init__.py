"""deploy: Kubernetes manifests for a built repository (:mod:`~generator.deploy.manifests`) and the fleet
size a measured load test implies (:mod:`~generator.deploy.capacity`).
"""
