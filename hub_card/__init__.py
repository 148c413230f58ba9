"""The SteerMoE Hub model card template and the publishing helpers that render and upload it."""
