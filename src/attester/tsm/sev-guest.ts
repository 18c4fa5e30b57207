/**
 * Fallback for SNP guests on kernels without configfs-tsm: SNP_GET_EXT_REPORT on
 * /dev/sev-guest (include/uapi/linux/sev-guest.h) through the native addon. The device is
 * reached through the small `SevGuestDevice` interface so tests can use a stand-in.
 */
import { closeSync, openSync } from 'node:fs';
import { CloisterError } from '../../errors.js';
import { snpGetExtReport, type SnpExtendedReport } from '../../native/index.js';

const DEFAULT_SEV_GUEST_PATH = '/dev/sev-guest';

export interface SevGuestDevice {
  /** One extended report for 64 bytes of report data at `vmpl`. */
  getExtReport(reportData: Uint8Array, vmpl: number): Promise<SnpExtendedReport>;
}

/** The real device: opens the path for each request and always closes it. */
export function nativeSevGuestDevice(path = DEFAULT_SEV_GUEST_PATH): SevGuestDevice {
  return {
    getExtReport(reportData, vmpl) {
      let fd: number;
      try {
        fd = openSync(path, 'r+');
      } catch (cause) {
        return Promise.reject(new CloisterError('PLATFORM_UNAVAILABLE', 'cannot open the SEV guest device', { cause }));
      }
      try {
        return Promise.resolve(snpGetExtReport(fd, reportData, { vmpl }));
      } catch (err) {
        return Promise.reject(err instanceof CloisterError ? err : new CloisterError('ATTESTER_FAILED', 'SNP_GET_EXT_REPORT failed', { cause: err }));
      } finally {
        closeSync(fd);
      }
    },
  };
}
