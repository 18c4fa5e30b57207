/**
 * The NSM transport: one request/response exchange with the Nitro Secure Module.
 *
 * In an enclave the transport is /dev/nsm plus the NSM_IOCTL_RAW ioctl (native addon). Tests
 * inject their own `NsmTransport`; product code never fakes the device.
 */
import { closeSync, openSync } from 'node:fs';
import { CloisterError } from '../../errors.js';
import { nsmRaw, requireNative } from '../../native/index.js';
import type { NativeAddon } from '../../native/index.js';

export const NSM_DEVICE_PATH = '/dev/nsm';

export interface NsmTransport {
  /** Sends one CBOR request, returns the CBOR response. */
  raw(request: Uint8Array): Uint8Array;
  close(): void;
}

export interface OpenNsmOptions {
  /** Device path; default /dev/nsm. */
  readonly path?: string;
  /** Addon override (tests). */
  readonly addon?: NativeAddon;
}

/** Opens the NSM device. PLATFORM_UNAVAILABLE when there is no device or no addon. */
export function openNsmDevice(options: OpenNsmOptions = {}): NsmTransport {
  const path = options.path ?? NSM_DEVICE_PATH;
  const addon = options.addon ?? requireNative();
  let fd: number;
  try {
    fd = openSync(path, 'r+');
  } catch (cause) {
    throw new CloisterError('PLATFORM_UNAVAILABLE', `cannot open ${path} (not inside a Nitro Enclave?)`, { cause });
  }
  let open = true;
  return {
    raw(request: Uint8Array): Uint8Array {
      if (!open) throw new CloisterError('PLATFORM_UNAVAILABLE', 'NSM device is closed');
      return nsmRaw(fd, request, addon);
    },
    close(): void {
      if (open) {
        open = false;
        closeSync(fd);
      }
    },
  };
}
