"""Dose models: inputs (conditioning), networks, noise schedules and samplers, pipelines, training, prediction.

Split after diffusers: networks map (x_t, t, condition) -> prediction and never loop over t; schedulers own
the noise maths and hold no nn.Module; only `pipeline.py` joins them.
"""
