"""Training of the bin2bin-v2 generator for the ``gan`` concealer (needs the ``train`` extra).

``model`` (generator, discriminator, size counts), ``data`` (LP-filled examples and
their cache), ``losses``, ``config`` (``nmp_peer/conf/train/``), ``train`` (the resumable
training command, over ``batches``, ``frontend``, ``trainer`` and ``logs``), ``export``
(checkpoint to ONNX with a parity check) and ``evaluate``
(held-out comparison with ``lpc`` and ``repeat``, and timing; numpy and onnxruntime
only). The runtime, ``nmp_peer.conceal.gan``, never imports this package.
"""
