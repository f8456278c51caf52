"""The Flower side of the message format: `simulator.messages` ↔ Flower records and Messages.

Both the ClientApp (`clients/`) and the ServerApp (`server/`) import this package, never each
other; the engines use it too. Modules: `records` (arrays ↔ ArrayRecord, the scenario in the
run config), `messages` (typed instructions and replies ↔ Flower Messages), `flwr_internals`
(every Flower internal the project touches, pinned by a test).
"""
