// The metadata service's fixed names, shared by the service, stage0 and
// stage1 (rkt's values).

/** TCP port the apps reach the service on, unless `--listen-port` says otherwise. */
export const DEFAULT_PORT = 18112;

/** rkt's registration socket. */
export const DEFAULT_SOCKET = '/run/rkt/metadata-svc.sock';

/** Names another registration socket, for `rkt metadata-service` and `rkt run` alike (two services side by side). */
export const SOCKET_ENV = 'RKT_METADATA_SERVICE_SOCKET';

/** A token is at least 128 bits (appc spec/ace.md) written in URL-safe characters. */
export const TOKEN_PATTERN = /^[A-Za-z0-9_-]{32,128}$/;
