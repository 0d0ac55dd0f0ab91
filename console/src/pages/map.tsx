import 'leaflet/dist/leaflet.css';
import L from 'leaflet';
import { useEffect, useRef, useState } from 'preact/hooks';
import Supercluster from 'supercluster';
import { gql, session, subscribe } from '../api.js';
import { SiteTree } from '../components/site-tree';
import { deviceColour, errorText, SEVERITIES, type Severity } from '../format.js';
import { navigate, route } from '../router.js';
import { flatten, loadSites, type SiteNode } from '../sites.js';

/** One device on the map. */
interface MapPoint {
  id: string;
  name: string;
  lat: number;
  lng: number;
  online: boolean;
  worst: Severity | null;
}

interface PointProps {
  id: string;
  /** 0 = critical … 4 = indeterminate, 5 = no active alarm */
  rank: number;
  offline: number;
  n: number;
}

const PAGE = 1000;
/** Set once the map has drawn its first complete load of devices (`detail.points`: how many). */
const MAP_MARK = 'rulr:map-drawn';
/** Devices kept loaded at most; beyond it, those outside the view are dropped first. */
const MAX_POINTS = 60_000;

const MAP_QUERY = `query Map($bbox: BoundingBox!, $siteId: ID, $first: Int, $after: String) {
  devicesInBox(bbox: $bbox, siteId: $siteId, first: $first, after: $after) {
    edges { node { id name location { lat lng } status { online } worstActiveSeverity } }
    pageInfo { hasNextPage endCursor }
  }
}`;

interface Extent {
  minLat: number;
  minLng: number;
  maxLat: number;
  maxLng: number;
  devices: number;
}
const EXTENT_FIELDS = 'minLat minLng maxLat maxLng devices';
/** The first view and the outlines in one request: the org's device extent, each site's hull. */
const START_QUERY = `query MapStart { deviceExtent { ${EXTENT_FIELDS} } sites { id outline { lat lng } } }`;
const SITE_EXTENT = `query SiteExtent($siteId: ID) { deviceExtent(siteId: $siteId) { ${EXTENT_FIELDS} } }`;

/** Outline style by depth in the site tree: the city bold, districts plain, streets thin and dashed. */
const OUTLINE_STYLE: L.PathOptions[] = [
  { color: '#1864ab', weight: 2.5, fillColor: '#1864ab', fillOpacity: 0.04 },
  { color: '#1c7ed6', weight: 1.8, fillColor: '#1c7ed6', fillOpacity: 0.05, dashArray: '6 4' },
  { color: '#4dabf7', weight: 1.2, fill: false, dashArray: '2 4' },
];

const rankOf = (s: Severity | null) => (s ? SEVERITIES.indexOf(s) : 5);
const severityOf = (rank: number): Severity | null => SEVERITIES[rank] ?? null;
const tileUrl = () => document.querySelector('meta[name="rulr-tile-url"]')?.getAttribute('content') || '';

type Edge = {
  node: {
    id: string;
    name: string;
    location: { lat: number; lng: number } | null;
    status: { online: boolean } | null;
    worstActiveSeverity: Severity | null;
  };
};

/** Each site's depth in the tree (0: a root), from the flattened list's parent ids. */
function depthOf(list: SiteNode[]): Map<string, number> {
  const byId = new Map(list.map((s) => [s.id, s]));
  const depth = new Map<string, number>();
  const of = (s: SiteNode, seen = 0): number => {
    const known = depth.get(s.id);
    if (known !== undefined) return known;
    const parent = s.parentId ? byId.get(s.parentId) : undefined;
    const d = parent && seen < 64 ? of(parent, seen + 1) + 1 : 0;
    depth.set(s.id, d);
    return d;
  };
  for (const s of list) of(s);
  return depth;
}

/** The fleet map: devices by bounding box as the map moves, clustered (supercluster) and coloured by status and worst alarm. */
export function MapPage(_props: { params: Record<string, string> }) {
  const el = useRef<HTMLElement>(null);
  const [roots, setRoots] = useState<SiteNode[]>([]);
  const [selected, setSelected] = useState<string | null>(route.value.params.get('site'));
  const [status, setStatus] = useState({ loaded: 0, inView: 0, loading: false, truncated: false, outlines: 0 });
  const [visible, setVisible] = useState<MapPoint[]>([]);
  const [error, setError] = useState<string | null>(null);
  const api = useRef<{ select(site: SiteNode | null): void } | null>(null);
  const orgId = session.value?.organization.id ?? '';

  useEffect(() => {
    loadSites(orgId)
      .then(setRoots)
      .catch((e: unknown) => setError(errorText(e)));
  }, [orgId]);

  useEffect(() => {
    if (!el.current) return;
    const map = L.map(el.current, { preferCanvas: true, worldCopyJump: false, zoomSnap: 0.5, minZoom: 2, maxZoom: 19 });
    const url = tileUrl();
    if (url) L.tileLayer(url, { maxZoom: 19, attribution: 'Map tiles' }).addTo(map);
    const renderer = L.canvas({ padding: 0.2 });
    const siteLayer = L.layerGroup().addTo(map);
    const pointLayer = L.layerGroup().addTo(map);
    const points = new Map<string, MapPoint>();
    const clusterOptions: Supercluster.Options<PointProps, PointProps> = {
      radius: 50,
      maxZoom: 17,
      map: (p) => ({ id: p.id, rank: p.rank, offline: p.offline, n: 1 }),
      reduce: (acc, p) => {
        acc.rank = Math.min(acc.rank, p.rank);
        acc.offline += p.offline;
        acc.n += p.n;
      },
    };
    let index = new Supercluster<PointProps, PointProps>(clusterOptions).load([]);
    let siteId: string | null = selected;
    let generation = 0;
    let dirty = false;

    const rebuild = () => {
      const features = [...points.values()].map((p) => ({
        type: 'Feature' as const,
        geometry: { type: 'Point' as const, coordinates: [p.lng, p.lat] },
        properties: { id: p.id, rank: rankOf(p.worst), offline: p.online ? 0 : 1, n: 1 },
      }));
      index = new Supercluster<PointProps, PointProps>(clusterOptions);
      index.load(features);
      draw();
    };

    const draw = () => {
      const b = map.getBounds();
      const zoom = Math.round(map.getZoom());
      const clusters = index.getClusters(
        [Math.max(-180, b.getWest()), Math.max(-85, b.getSouth()), Math.min(180, b.getEast()), Math.min(85, b.getNorth())],
        zoom,
      );
      pointLayer.clearLayers();
      const inView: MapPoint[] = [];
      let count = 0;
      for (const c of clusters) {
        const [lng, lat] = c.geometry.coordinates as [number, number];
        const p = c.properties as PointProps & { cluster?: boolean; cluster_id?: number; point_count?: number };
        if (p.cluster) {
          const n = p.point_count ?? p.n;
          count += n;
          const colour = deviceColour(p.offline < n, severityOf(p.rank));
          const size = Math.min(56, 24 + Math.log10(n) * 10);
          const icon = L.divIcon({ html: '', className: 'cluster-icon', iconSize: [size, size] });
          const m = L.marker([lat, lng], { icon, title: `${n} devices`, keyboard: true, alt: `${n} devices` });
          m.on('add', () => {
            const node = m.getElement();
            if (node) {
              node.textContent = n >= 1000 ? `${Math.round(n / 100) / 10}k` : String(n);
              node.style.background = colour;
              node.setAttribute('role', 'button');
              node.setAttribute('aria-label', `${n} devices, zoom in`);
            }
          });
          m.on('click', () => map.setView([lat, lng], Math.min(index.getClusterExpansionZoom(p.cluster_id as number), 19)));
          m.addTo(pointLayer);
        } else {
          count += 1;
          const d = points.get(p.id);
          if (!d) continue;
          inView.push(d);
          const cm = L.circleMarker([lat, lng], {
            renderer,
            radius: 7,
            weight: 1.5,
            color: '#ffffff',
            fillColor: deviceColour(d.online, d.worst),
            fillOpacity: 0.95,
          });
          cm.bindTooltip(`${d.name} — ${d.online ? 'online' : 'offline'}${d.worst ? `, ${d.worst.toLowerCase()} alarm` : ''}`);
          cm.on('click', () => navigate(`/devices/${d.id}`));
          cm.addTo(pointLayer);
        }
      }
      // the list beside the map names devices in view whether drawn alone or inside a cluster
      if (inView.length < 100) {
        const shown = new Set(inView.map((d) => d.id));
        for (const d of points.values()) {
          if (inView.length >= 100) break;
          if (!shown.has(d.id) && b.contains([d.lat, d.lng])) inView.push(d);
        }
      }
      setVisible(inView.slice(0, 100));
      setStatus((s) => ({ ...s, loaded: points.size, inView: count }));
    };

    const adopt = (edges: Edge[]) => {
      for (const { node } of edges) {
        if (!node.location) continue;
        points.set(node.id, {
          id: node.id,
          name: node.name,
          lat: node.location.lat,
          lng: node.location.lng,
          online: node.status?.online ?? false,
          worst: node.worstActiveSeverity,
        });
      }
    };

    const trim = () => {
      if (points.size <= MAX_POINTS) return;
      const b = map.getBounds().pad(0.5);
      for (const [id, p] of points) if (!b.contains([p.lat, p.lng])) points.delete(id);
    };

    const load = async () => {
      const gen = ++generation;
      const b = map.getBounds().pad(0.25);
      const bbox = {
        minLat: Math.max(-90, b.getSouth()),
        maxLat: Math.min(90, b.getNorth()),
        minLng: Math.max(-180, b.getWest()),
        maxLng: Math.min(180, b.getEast()),
      };
      setStatus((s) => ({ ...s, loading: true, truncated: false }));
      let after: string | null = null;
      let pages = 0;
      try {
        for (;;) {
          const d: { devicesInBox: { edges: Edge[]; pageInfo: { hasNextPage: boolean; endCursor: string | null } } | null } = await gql(
            MAP_QUERY,
            {
              bbox,
              siteId,
              first: PAGE,
              after,
            },
          );
          if (gen !== generation) return;
          const page = d.devicesInBox;
          if (!page) break;
          adopt(page.edges);
          pages++;
          rebuild();
          if (!page.pageInfo.hasNextPage) break;
          if (pages * PAGE >= MAX_POINTS) {
            setStatus((s) => ({ ...s, truncated: true }));
            break;
          }
          after = page.pageInfo.endCursor;
        }
        trim();
        setError(null);
        // the benchmark's "first meaningful paint": the first complete load drawn (console/README.md)
        if (!performance.getEntriesByName(MAP_MARK).length) performance.mark(MAP_MARK, { detail: { points: points.size } });
      } catch (e) {
        if (gen === generation) setError(errorText(e));
      } finally {
        if (gen === generation) setStatus((s) => ({ ...s, loading: false }));
      }
    };

    let timer: ReturnType<typeof setTimeout> | undefined;
    const onMove = () => {
      draw();
      clearTimeout(timer);
      timer = setTimeout(() => void load(), 250);
    };
    map.on('moveend', onMove);

    /**
     * Sites on the plain background (no tiles needed): each site's outline (the convex hull of its
     * subtree's devices, from the API), labelled at its centre down to the districts; a site with a
     * point location of its own gets a dashed ring there.
     */
    const drawSites = (list: SiteNode[], outlines: Map<string, { lat: number; lng: number }[]>) => {
      siteLayer.clearLayers();
      const depth = depthOf(list);
      for (const s of list) {
        const d = depth.get(s.id) ?? 0;
        const style = { ...OUTLINE_STYLE[Math.min(d, OUTLINE_STYLE.length - 1)], renderer, interactive: false };
        const ring = (outlines.get(s.id) ?? []).map((p) => [p.lat, p.lng] as [number, number]);
        if (ring.length >= 3) L.polygon(ring, style).addTo(siteLayer);
        else if (ring.length === 2) L.polyline(ring, style).addTo(siteLayer);
        const centre = ring.length ? L.latLngBounds(ring).getCenter() : s.location ? L.latLng(s.location.lat, s.location.lng) : null;
        if (s.location)
          L.circleMarker([s.location.lat, s.location.lng], {
            renderer,
            radius: 12,
            weight: 2,
            color: '#1864ab',
            fill: false,
            dashArray: '4 3',
            interactive: false,
          }).addTo(siteLayer);
        if (centre && d <= 1)
          L.tooltip({ permanent: true, direction: 'center', className: d === 0 ? 'site-label site-label-root' : 'site-label' })
            .setLatLng(centre)
            .setContent(s.name)
            .addTo(siteLayer);
      }
      setStatus((st) => ({ ...st, outlines: [...outlines.values()].filter((o) => o.length >= 2).length }));
    };

    const fitExtent = (e: Extent) => {
      const b = L.latLngBounds([e.minLat, e.minLng], [e.maxLat, e.maxLng]);
      // one spot (or devices a few metres apart): a street-sized view around it
      if (map.distance(b.getSouthWest(), b.getNorthEast()) < 50) map.setView(b.getCenter(), 17);
      else map.fitBounds(b.pad(0.05), { maxZoom: 17 });
    };

    /** One site: a district-sized view around it; several: all of them. */
    const fitSites = (located: SiteNode[]) => {
      const ll = located.map((s) => [s.location?.lat ?? 0, s.location?.lng ?? 0] as [number, number]);
      if (ll.length === 1) map.setView(ll[0] as [number, number], 13);
      else map.fitBounds(L.latLngBounds(ll).pad(0.3), { maxZoom: 15 });
    };

    api.current = {
      select(site) {
        siteId = site?.id ?? null;
        points.clear();
        rebuild();
        // the view of the site's devices; a site without located devices: its own location(s)
        void gql<{ deviceExtent: Extent | null }>(SITE_EXTENT, { siteId })
          .then((d) => {
            if (d.deviceExtent) return fitExtent(d.deviceExtent);
            const located = site ? flatten([site]).filter((s) => s.location) : [];
            if (located.length) fitSites(located);
          })
          .catch((e: unknown) => setError(errorText(e)))
          .finally(() => void load());
      },
    };

    // first view: the extent of the organization's devices, else the sites' locations, else the world
    void (async () => {
      try {
        const [tree, start] = await Promise.all([
          loadSites(orgId),
          gql<{ deviceExtent: Extent | null; sites: { id: string; outline: { lat: number; lng: number }[] | null }[] | null }>(START_QUERY),
        ]);
        const sites = flatten(tree);
        drawSites(sites, new Map((start.sites ?? []).map((s) => [s.id, s.outline ?? []])));
        if (start.deviceExtent) return fitExtent(start.deviceExtent);
        const located = sites.filter((s) => s.location);
        if (located.length) return fitSites(located);
        map.setView([20, 0], 2);
      } catch (e) {
        setError(errorText(e));
        map.setView([20, 0], 2);
      }
    })();

    // live colours: status and alarm changes of the organization's devices
    const change = (id: string, f: (p: MapPoint) => void) => {
      const p = points.get(id);
      if (!p) return;
      f(p);
      dirty = true;
    };
    const offStatus = subscribe<{ deviceStatusChanged: { device: { id: string } | null; online: boolean } }>(
      'subscription { deviceStatusChanged { online device { id } } }',
      {},
      (d) => {
        const id = d.deviceStatusChanged.device?.id;
        if (id) change(id, (p) => (p.online = d.deviceStatusChanged.online));
      },
    );
    const offAlarms = subscribe<{
      alarmChanged: { alarm: { device: { id: string; worstActiveSeverity: Severity | null } | null } | null };
    }>('subscription { alarmChanged { kind alarm { device { id worstActiveSeverity } } } }', {}, (d) => {
      const dev = d.alarmChanged.alarm?.device;
      if (dev) change(dev.id, (p) => (p.worst = dev.worstActiveSeverity));
    });
    const tick = setInterval(() => {
      if (!dirty) return;
      dirty = false;
      rebuild();
    }, 1000);

    return () => {
      clearInterval(tick);
      clearTimeout(timer);
      offStatus();
      offAlarms();
      generation++;
      map.remove();
      api.current = null;
    };
    // the map is made once per organization; site changes go through api.current
  }, [orgId]);

  const all = flatten(roots);
  return (
    <div class="fleet">
      <aside class="panel tree">
        <h1>Fleet</h1>
        <SiteTree
          roots={roots}
          selected={selected}
          onSelect={(id) => {
            setSelected(id);
            api.current?.select(all.find((s) => s.id === id) ?? null);
          }}
        />
        <div class="legend">
          <span>
            <i class="dot-ok" /> online
          </span>
          <span>
            <i class="dot-off" /> offline
          </span>
          <span>
            <i class="dot-CRITICAL" /> critical
          </span>
          <span>
            <i class="dot-MAJOR" /> major
          </span>
          <span>
            <i class="dot-MINOR" /> minor
          </span>
          <span>
            <i class="dot-WARNING" /> warning
          </span>
        </div>
        <p role="status" data-testid="map-status" data-loaded={status.loaded} data-in-view={status.inView} data-outlines={status.outlines}>
          {status.loading ? 'Loading… ' : ''}
          {status.inView} devices in view ({status.loaded} loaded){status.truncated ? ' — zoom in to load all' : ''}
        </p>
        {error && (
          <p role="alert" class="error">
            {error}
          </p>
        )}
        {visible.length > 0 && (
          <>
            <h2>Devices in view</h2>
            <ul class="devices-in-view">
              {visible.map((d) => (
                <li key={d.id}>
                  <a href={`#/devices/${d.id}`} data-testid="device-link">
                    {d.name}
                  </a>{' '}
                  <span class="muted">
                    {d.online ? 'online' : 'offline'}
                    {d.worst ? `, ${d.worst.toLowerCase()}` : ''}
                  </span>
                </li>
              ))}
            </ul>
          </>
        )}
      </aside>
      <section class="map" ref={el} data-testid="fleet-map" aria-label="Fleet map" />
    </div>
  );
}
