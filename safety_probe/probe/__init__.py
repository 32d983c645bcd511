"""Every forward that reads the model: recording pooled states (``record``), the model pass of probe-layers that
measures everything its analysis needs with each run encoded once (``measure``, settings in ``config``), the logit
lens and attention (``lens``), refusal — the judge, K, P(refusal) — (``refusal``) and activation patching
(``patching``)."""
