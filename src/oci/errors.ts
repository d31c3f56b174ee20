// A request this runtime refuses: one line for stderr and the shim's log.
export class OciError extends Error {}
