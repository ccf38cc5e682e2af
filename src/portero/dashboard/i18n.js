// Spanish and English text; the default follows the browser, the toggle is remembered.
const TEXT = {
  en: {
    connecting: "connecting…", live: "live", offline: "unreachable", readOnly: "read-only token",
    window: "Window", signIn: "Sign in", signOut: "Sign out", cancel: "Cancel", confirm: "Confirm",
    tokenHelp: "Paste an API token (portero token create, or the admin token file in the state directory).",
    badToken: "That token was refused.",
    rps: "Requests per second", p95: "Latency p95", errors: "Error rate (5xx)",
    replicasOverTime: "Replicas over time (▲ autoscaler decisions)", cpu: "CPU per replica",
    memory: "Memory per replica", services: "Services and replicas", alerts: "Active alerts",
    deployment: "Deployment", autoscaler: "Autoscaler", endpoints: "Router endpoints", events: "Recent events",
    logs: "Log stream", noAlerts: "No active alerts.", noDeployments: "No deployment yet.", noData: "no data yet",
    replicas: "replicas", ready: "ready", desired: "desired", revision: "revision", state: "state",
    address: "address", uptime: "uptime", restarts: "restarts", replica: "replica", service: "service",
    scale: "Scale", deploy: "Deploy", rollback: "Roll back", drain: "Drain", version: "version",
    weight: "weight", inflight: "in flight", requests: "requests", health: "health",
    confirmScale: "Scale {service} from {from} to {to} replicas?",
    confirmDeploy: "Deploy version {version} of {service}?",
    confirmDeployEnv: "Deploy a new revision of {service} (same template)?",
    confirmRollback: "Roll {service} back to its previous revision?",
    confirmDrain: "Drain replica {replica} ({address})? It stops getting new requests.",
    done: "Done: {what}", failed: "Failed: {what}", forbidden: "This token is read-only: actions are hidden.",
    enabled: "enabled", disabled: "disabled", lastDecision: "last decision", signals: "signals",
    strategy: "strategy", phase: "phase", started: "started", finished: "finished", steps: "steps",
    firing: "firing", firingKpi: "firing", pending: "pending", since: "since", monitoringOff: "Monitoring is disabled.",
    errRate: "errors", total: "total",
  },
  es: {
    connecting: "conectando…", live: "en vivo", offline: "sin conexión", readOnly: "token de solo lectura",
    window: "Ventana", signIn: "Entrar", signOut: "Salir", cancel: "Cancelar", confirm: "Confirmar",
    tokenHelp: "Pegá un token de la API (portero token create, o el archivo del token admin en el directorio de estado).",
    badToken: "Ese token fue rechazado.",
    rps: "Peticiones por segundo", p95: "Latencia p95", errors: "Tasa de errores (5xx)",
    replicasOverTime: "Réplicas en el tiempo (▲ decisiones del autoescalado)", cpu: "CPU por réplica",
    memory: "Memoria por réplica", services: "Servicios y réplicas", alerts: "Alertas activas",
    deployment: "Despliegue", autoscaler: "Autoescalado", endpoints: "Endpoints del router", events: "Eventos recientes",
    logs: "Logs en vivo", noAlerts: "Sin alertas activas.", noDeployments: "Todavía no hubo despliegues.",
    noData: "sin datos aún", replicas: "réplicas", ready: "listas", desired: "deseadas", revision: "revisión",
    state: "estado", address: "dirección", uptime: "activa hace", restarts: "reinicios", replica: "réplica",
    service: "servicio", scale: "Escalar", deploy: "Desplegar", rollback: "Revertir", drain: "Drenar",
    version: "versión", weight: "peso", inflight: "en curso", requests: "peticiones", health: "salud",
    confirmScale: "¿Escalar {service} de {from} a {to} réplicas?",
    confirmDeploy: "¿Desplegar la versión {version} de {service}?",
    confirmDeployEnv: "¿Desplegar una nueva revisión de {service} (misma plantilla)?",
    confirmRollback: "¿Revertir {service} a su revisión anterior?",
    confirmDrain: "¿Drenar la réplica {replica} ({address})? Deja de recibir peticiones nuevas.",
    done: "Hecho: {what}", failed: "Falló: {what}", forbidden: "Este token es de solo lectura: se ocultan las acciones.",
    enabled: "activo", disabled: "inactivo", lastDecision: "última decisión", signals: "señales",
    strategy: "estrategia", phase: "fase", started: "inicio", finished: "fin", steps: "pasos",
    firing: "disparada", firingKpi: "disparadas", pending: "pendiente", since: "desde", monitoringOff: "El monitoreo está desactivado.",
    errRate: "errores", total: "total",
  },
};

let lang = localStorage.getItem("portero.lang") || ((navigator.language || "en").toLowerCase().startsWith("es") ? "es" : "en");

export function language() {
  return lang;
}

export function setLanguage(next) {
  lang = next in TEXT ? next : "en";
  localStorage.setItem("portero.lang", lang);
  translate(document);
}

export function t(key, values = {}) {
  const text = TEXT[lang][key] ?? TEXT.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

export function translate(root) {
  document.documentElement.lang = lang;
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
}
