"""Engines that run the same Flower ServerApp and ClientApp: in-process (default) or Ray.

`inprocess.run_inprocess` / `InProcessGrid`: every node is a Context in this process.
`ray_engine.run_ray`: Flower's simulation runtime (needs `pip install -e '.[ray]'`).
"""
