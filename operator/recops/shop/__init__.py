"""The synthetic shop (`synth`: a catalogue and an event log whose clicks follow known rules) and its shoppers
(`traffic`: searches and feedback sent to a running `recops serve`), behind `recops data`. For demos, tests and
benchmarks; neither the trainer nor the server needs it."""
