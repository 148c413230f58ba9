# Copyright 2026 The SteerMoE authors. Licensed under the Apache License, Version 2.0.
"""`python -m serving ADAPTER [vLLM arguments]` (see `serving.launch`)."""

from serving.launch import main

if __name__ == "__main__":
    main()
