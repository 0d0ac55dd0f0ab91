/**
 * The device ids of one bench:programs run: a per-run tag of 8 hex digits, then the lamp's number,
 * so the simulated lamps know the run's devices from the topic alone (`devices/{id}/commands`).
 */
export const benchDeviceId = (tag: string, i: number) => `${tag}-0000-4000-8000-${i.toString(16).padStart(12, '0')}`;
