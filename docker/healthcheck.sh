#!/bin/bash
# Docker HEALTHCHECK for canaryd: GET /health on loopback, healthy on a 200.
# The runtime image has no curl; bash's /dev/tcp is enough for one request.
port=${CANARYD_HEALTH_PORT:-8080}
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
IFS=' ' read -r -t 2 _ status _ <&3 || exit 1
[[ "$status" == 200 ]]
