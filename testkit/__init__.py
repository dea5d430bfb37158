"""The test kit: what the tests and the benchmarks share, typed like the shipped code (mypy strict).

    processes      redis-server, workers, bots, `kullm` as processes; free ports
    polling        waiting for a condition (`eventually`, `wait_until`)
    engines        the scripted engine (fast, no torch) and the in-process worker fixture's parts
    faults         engines that fail on purpose: poison, out of memory, paced, refusing writes
    random_weights a real model's shape with random weights (`ENGINE=testkit.random_weights:random_weights_engine`)
    tiny_model     the tests' tiny trained model; `trained` what it answers
    standins       loopback Discord and Slack, as their references specify them
    conformance, controls, shown, hostile_files   checks and inputs the tests and the soak share

It is not shipped: nothing under chatbus/, bot/, inference/, kullm/ or runtime/ imports it.
"""
