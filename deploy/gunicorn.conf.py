"""gunicorn's configuration for the keyserver, the alternative to granian
(deploy/granian.env, which deploy/keyserver.service runs; its comment has the gunicorn
line):

    gunicorn -c deploy/gunicorn.conf.py 'keyserver:create_app()'

behind nginx (deploy/nginx.conf), which reads every request whole before it reaches a
worker. Worker class and counts are those docs/benchmarks.md measured best for gunicorn on two
cores ("Key document and notary under load"): three gthread workers of two threads, with
keep-alive (1.3 to 3 times sync workers, which close every connection); gthread also
keeps reads answered while writes wait for the lock. For more cores, scale workers
with them (about one and a half per core) and measure with scripts/bench keydoc.
Command-line options override these (tests/test_e2e_nginx.py passes -b and -w).
"""

# Only nginx on this machine reaches gunicorn.                            ADAPT the port
bind = "127.0.0.1:5000"
worker_class = "gthread"
workers = 3
threads = 2
# Idle keep-alive connections from nginx are closed after 5 s (nginx's upstream
# keepalive_timeout is 4 s, below it).
keepalive = 5
# A worker silent for 30 s is killed and replaced: above REQUEST_WAIT_BOUND (10 s, the
# longest any request waits for the database), so only a stuck worker reaches it.
timeout = 30
graceful_timeout = 30
# No access log: gunicorn's default format holds the path (identities, sigkeyhashes);
# the keyserver logs every request itself (endpoint, status, request id).
accesslog = None
errorlog = "-"
loglevel = "info"
# gunicorn 27 opens a control socket in ~/.gunicorn/ shared by one user's servers.
control_socket_disable = True
# Limits of the request line and headers (gunicorn's defaults; nginx's are alike).
limit_request_line = 4094
limit_request_fields = 100
