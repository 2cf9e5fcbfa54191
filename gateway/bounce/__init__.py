"""Everything that reads a message as a bounce.

The one entry point is :func:`gateway.bounce.parse.parse`: message bytes (and the envelope
sender) in, one normalised and classified :class:`~gateway.bounce.report.BounceReport` out.

============================  ==================================================================
``parse``                     the entry point: which kind of bounce, its parts, its recipients
``mime``                      the MIME tree with byte offsets (declared boundaries, flanker, stdlib)
``delivery_status``           RFC 3464 / RFC 6533 field groups -> one record per recipient
``text_formats``              bounces without a delivery-status part: one table row per format
``ses``                       Amazon SES JSON notifications
``signs``                     whether a message is a bounce at all (senders, subjects, wording)
``classify``                  category and variant per recipient, Microsoft evidence
``family``                    the 5.7.12 family: one table, everything else derived from it
``report``                    the ``BounceReport`` type the rest of the gateway reads
``prefilter``                 the cheap test that keeps ordinary mail away from the parser
============================  ==================================================================

This package module imports nothing, so ``family``, ``report`` and ``prefilter`` load without
the MIME libraries.
"""
