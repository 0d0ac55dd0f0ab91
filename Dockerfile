# syntax=docker/dockerfile:1
# One image for every RULR role: `docker run rulr start gateway`, `… start devices`, `… migrate`.

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY scripts/copy-assets.mjs scripts/console-budget.mjs ./scripts/
COPY console ./console
COPY lib ./lib
COPY cli ./cli
COPY schema ./schema
COPY gateway ./gateway
COPY subgraphs ./subgraphs
COPY ingest ./ingest
COPY workers ./workers
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json /app/package-lock.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/bin ./bin
# The base image's unprivileged user (uid 1000); nothing in /app is writable by it.
USER node
EXPOSE 3000 4001 4002 4003 4004 4005 4010 4011
# Each role's port differs, so health checks live in docker-compose.yml / the k8s probes
# (GET /healthz on the role's port).
ENTRYPOINT ["node", "bin/rulr.js"]
CMD ["start", "all"]
