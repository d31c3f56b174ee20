// The version of this rkt and of the appc spec it implements.
export const RKT_VERSION = '0.1.0';
export const APPC_VERSION = '0.8.11';
/** Version of the stage1 interface this stage0 speaks (rkt's interface-version). */
export const STAGE1_INTERFACE_VERSION = 5;
