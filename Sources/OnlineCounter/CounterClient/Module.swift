// Module CounterClient: see docs/ for its design. Its sources land with the issue that builds it.
