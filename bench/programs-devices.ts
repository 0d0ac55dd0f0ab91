// Simulated lamps for bench:programs, in a child process of their own (so their MQTT work is not
// counted against the workers process): BENCH_SIM_CLIENTS mqtt.js clients share the subscription
// `$share/<group>/devices/+/commands` and answer every command of the bench's own devices (ids
// starting with BENCH_SIM_TAG) at once, `received` then `succeeded`, on
// `devices/{id}/commands/reply` (lib/contracts/commands.ts). Commands of other ids are counted
// and ignored.
//
// Protocol on stdin/stdout (one line each): prints `ready` once subscribed; `announce` publishes
// `devices/{id}/status` online with `state: {level: 0}` for every device, then prints `announced`;
// `stats` prints `stats {json}`.
import { createInterface } from 'node:readline';
import mqtt, { type MqttClient } from 'mqtt';
import { deviceCommandReplyTopic, encodeCommandReply, parseCommandMessage } from '../lib/contracts/commands.js';
import { benchDeviceId } from './programs-ids.js';

const URL = process.env.BENCH_SIM_URL as string;
const TAG = process.env.BENCH_SIM_TAG as string;
const LAMPS = Number(process.env.BENCH_PROGRAM_LAMPS ?? 100_000);
const CLIENTS = Number(process.env.BENCH_SIM_CLIENTS ?? 4);
const GROUP = `sim-${TAG}`;

const stats = { commands: 0, repeated: 0, foreign: 0, invalid: 0, replies: 0 };
const executed = new Set<string>();

async function connect(i: number): Promise<MqttClient> {
  const c = await mqtt.connectAsync(URL, {
    clientId: `bench-lamps-${TAG}-${i}`,
    protocolVersion: 5,
    clean: true,
    reconnectPeriod: 1000,
    // answers pile up quickly: let mqtt.js keep them all in flight, the broker allows it
    properties: { receiveMaximum: 65535 },
  });
  c.on('message', (topic, payload) => {
    const id = topic.split('/')[1] ?? '';
    if (!id.startsWith(TAG)) {
      stats.foreign++;
      return;
    }
    let m: ReturnType<typeof parseCommandMessage>;
    try {
      m = parseCommandMessage(payload);
    } catch {
      stats.invalid++;
      return;
    }
    stats.commands++;
    // a device executes each command id once; a repeated delivery is answered again
    if (executed.has(m.id)) stats.repeated++;
    executed.add(m.id);
    const level = (m.params.desired as { level?: unknown } | undefined)?.level ?? null;
    const reply = deviceCommandReplyTopic(id);
    c.publish(reply, encodeCommandReply({ id: m.id, status: 'received' }), { qos: 1 });
    c.publish(reply, encodeCommandReply({ id: m.id, status: 'succeeded', result: { level } }), { qos: 1 }, () => {
      stats.replies++;
    });
  });
  await c.subscribeAsync(`$share/${GROUP}/devices/+/commands`, { qos: 1 });
  return c;
}

const clients = await Promise.all(Array.from({ length: CLIENTS }, (_, i) => connect(i)));

async function announce(): Promise<void> {
  const state = JSON.stringify({ online: true, state: { level: 0 } });
  const inFlight: Promise<unknown>[] = [];
  for (let i = 0; i < LAMPS; i++) {
    const c = clients[i % CLIENTS] as MqttClient;
    inFlight.push(c.publishAsync(`devices/${benchDeviceId(TAG, i)}/status`, state, { qos: 1 }));
    if (inFlight.length >= 2000) await Promise.all(inFlight.splice(0));
  }
  await Promise.all(inFlight);
}

process.stdout.write('ready\n');
createInterface({ input: process.stdin }).on('line', (l) => {
  const cmd = l.trim();
  if (cmd === 'announce') void announce().then(() => process.stdout.write('announced\n'));
  else if (cmd === 'stats')
    process.stdout.write(`stats ${JSON.stringify({ ...stats, rssMb: Math.round(process.resourceUsage().maxRSS / 1024) })}\n`);
});
const stop = async () => {
  await Promise.all(clients.map((c) => c.endAsync()));
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
