#!/bin/sh
# What Postfix needs for mailgate in compose.yaml (docs/backends.md), run
# once when the image is built. Domains, delivery to Dovecot's LMTP and the
# rest are your own settings.
set -eu

# Only mailgate may send XCLIENT: the client's address, EHLO name and login
# then replace mailgate's for Postfix's checks, logs and Received: lines.
postconf -e \
  'smtpd_authorized_xclient_hosts = 172.30.25.10/32' \
  'smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination' \
  'maillog_file = /dev/stdout'

# The submission service mailgate hands logged-in sessions to
# (backends.smtp.address: postfix:587). XCLIENT LOGIN= makes the session
# authenticated, so permit_sasl_authenticated lets it relay; mailgate has
# already checked the password over IMAP (verify: imap).
postconf -M 'submission/inet=submission inet n - n - - smtpd'
postconf -P \
  'submission/inet/syslog_name=postfix/submission' \
  'submission/inet/smtpd_tls_security_level=none' \
  'submission/inet/smtpd_client_restrictions=' \
  'submission/inet/smtpd_relay_restrictions=permit_sasl_authenticated,reject'
