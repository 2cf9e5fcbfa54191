"""Milter mode: the relay's detection, explanation and recording inside the MTA.

``bouncegw milter`` speaks the Sendmail milter protocol (Postfix's ``smtpd_milters`` and
``non_smtpd_milters``, Sendmail's ``INPUT_MAIL_FILTER``): the MTA hands it every message's
headers and, for possible bounces, the body; an explained bounce comes back as header and
body changes. Modules: :mod:`.protocol` (framing and the codec, ``kilter.protocol``),
:mod:`.edits` (the message as bytes and back as actions), :mod:`.session` (one connection),
:mod:`.service` (listener, recorder, admin HTTP).
"""
