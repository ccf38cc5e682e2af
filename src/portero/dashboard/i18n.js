// Spanish and English text; the default follows the browser, the toggle is remembered.
const TEXT = {
  en: {
    connecting: "connecting…", live: "live", offline: "unreachable", readOnly: "read-only token",
    window: "Window", signIn: "Sign in", signOut: "Sign out", cancel: "Cancel", confirm: "Confirm",
    tokenHelp: "Paste an API token (portero token create, or the admin token file in the state directory).",
    badToken: "That token was refused.",
    rps: "Requests per second", p95: "Latency p95 (last {window})", errors: "Errors: share of answers, last {window}",
    windowNote: "p95 and errors: last {window}",
    replicasOverTime: "Replicas over time (▲ autoscaler decisions)", cpu: "CPU per replica",
    memory: "Memory per replica", services: "Services and replicas", alerts: "Active alerts",
    deployment: "Deployment", autoscaler: "Autoscaler", endpoints: "Router endpoints", events: "Recent events",
    certificates: "HTTPS certificates", host: "host", source: "source", expires: "expires", renewal: "renewal",
    logs: "Log stream", noAlerts: "No active alerts.", noDeployments: "No deployment yet.", noData: "no data yet",
    replicas: "replicas", ready: "ready", desired: "desired", revision: "revision", state: "state",
    address: "address", uptime: "uptime", restarts: "restarts", replica: "replica", service: "service",
    scale: "Scale", deploy: "Deploy", rollback: "Roll back", drain: "Drain", version: "version",
    weight: "weight", inflight: "in flight", requests: "requests", health: "health",
    faults: "faults", ejections: "ejections", ejectedNow: "ejected now",
    confirmScale: "Scale {service} from {from} to {to} replicas?",
    confirmDeploy: "Deploy version {version} of {service}?",
    confirmDeployEnv: "Deploy a new revision of {service} (same template)?",
    confirmRollback: "Roll {service} back to its previous revision?",
    confirmDrain: "Drain replica {replica} ({address})? It stops getting new requests.",
    confirmDrainLast: "{replica} is the last replica of {service} that takes requests: draining it STOPS THE SERVICE (every request waits, then gets 503). Drain it anyway?",
    undrain: "Undrain", confirmUndrain: "Put replica {replica} ({address}) back in rotation?",
    done: "Done: {what}", failed: "Failed: {what}", forbidden: "This token is read-only: actions are hidden.",
    enabled: "enabled", disabled: "disabled", lastDecision: "last decision", signals: "signals",
    strategy: "strategy", phase: "phase", started: "started", finished: "finished", steps: "steps",
    firing: "firing", firingKpi: "firing", pending: "pending", since: "since", monitoringOff: "Monitoring is disabled.",
    errRate: "errors", total: "total",
    state_pending: "pending", state_starting: "starting", state_ready: "ready", state_unhealthy: "unhealthy",
    state_stopping: "stopping", state_stopped: "stopped", state_backoff: "backoff", state_active: "active",
    state_draining: "draining", state_down: "down", state_running: "running", state_succeeded: "succeeded",
    state_rolled_back: "rolled back", state_aborted: "aborted", state_firing: "firing", state_resolved: "resolved",
    strategy_rolling: "rolling", "strategy_blue-green": "blue-green", strategy_canary: "canary",
    kind_deploy: "deploy", kind_rollback: "rollback",
    phase_starting: "starting", phase_rolling: "rolling", phase_canary: "canary", phase_switched: "switched", phase_done: "done",
    "event_replica.stray": "stray replica", "event_server.undrained": "server back in rotation",
    "event_autoscaler.cold_start": "cold start",
  },
  es: {
    connecting: "conectando…", live: "en vivo", offline: "sin conexión", readOnly: "token de solo lectura",
    window: "Ventana", signIn: "Entrar", signOut: "Salir", cancel: "Cancelar", confirm: "Confirmar",
    tokenHelp: "Pegá un token de la API (portero token create, o el archivo del token admin en el directorio de estado).",
    badToken: "Ese token fue rechazado.",
    rps: "Peticiones por segundo", p95: "Latencia p95 (últimos {window})", errors: "Errores: parte de las respuestas, últimos {window}",
    windowNote: "p95 y errores: últimos {window}",
    replicasOverTime: "Réplicas en el tiempo (▲ decisiones del autoescalado)", cpu: "CPU por réplica",
    memory: "Memoria por réplica", services: "Servicios y réplicas", alerts: "Alertas activas",
    deployment: "Despliegue", autoscaler: "Autoescalado", endpoints: "Endpoints del router", events: "Eventos recientes",
    certificates: "Certificados HTTPS", host: "host", source: "origen", expires: "vence", renewal: "renovación",
    logs: "Logs en vivo", noAlerts: "Sin alertas activas.", noDeployments: "Todavía no hubo despliegues.",
    noData: "sin datos aún", replicas: "réplicas", ready: "listas", desired: "deseadas", revision: "revisión",
    state: "estado", address: "dirección", uptime: "activa hace", restarts: "reinicios", replica: "réplica",
    service: "servicio", scale: "Escalar", deploy: "Desplegar", rollback: "Revertir", drain: "Drenar",
    version: "versión", weight: "peso", inflight: "en curso", requests: "peticiones", health: "salud",
    faults: "fallos", ejections: "expulsiones", ejectedNow: "expulsado ahora",
    confirmScale: "¿Escalar {service} de {from} a {to} réplicas?",
    confirmDeploy: "¿Desplegar la versión {version} de {service}?",
    confirmDeployEnv: "¿Desplegar una nueva revisión de {service} (misma plantilla)?",
    confirmRollback: "¿Revertir {service} a su revisión anterior?",
    confirmDrain: "¿Drenar la réplica {replica} ({address})? Deja de recibir peticiones nuevas.",
    confirmDrainLast: "{replica} es la última réplica de {service} que recibe peticiones: drenarla DETIENE EL SERVICIO (cada petición espera y luego recibe 503). ¿Drenarla de todos modos?",
    undrain: "Reactivar", confirmUndrain: "¿Volver a enviar peticiones a la réplica {replica} ({address})?",
    done: "Hecho: {what}", failed: "Falló: {what}", forbidden: "Este token es de solo lectura: se ocultan las acciones.",
    enabled: "activo", disabled: "inactivo", lastDecision: "última decisión", signals: "señales",
    strategy: "estrategia", phase: "fase", started: "inicio", finished: "fin", steps: "pasos",
    firing: "disparada", firingKpi: "disparadas", pending: "pendiente", since: "desde", monitoringOff: "El monitoreo está desactivado.",
    errRate: "errores", total: "total",
    state_pending: "pendiente", state_starting: "iniciando", state_ready: "lista", state_unhealthy: "enferma",
    state_stopping: "deteniéndose", state_stopped: "detenida", state_backoff: "en espera", state_active: "activo",
    state_draining: "drenando", state_down: "caído", state_running: "en curso", state_succeeded: "completado",
    state_rolled_back: "revertido", state_aborted: "abortado", state_firing: "disparada", state_resolved: "resuelta",
    strategy_rolling: "gradual", "strategy_blue-green": "azul-verde", strategy_canary: "canario",
    kind_deploy: "despliegue", kind_rollback: "reversión",
    phase_starting: "inicio", phase_rolling: "gradual", phase_canary: "canario", phase_switched: "conmutado", phase_done: "terminado",
    "event_replica.created": "réplica creada", "event_replica.started": "réplica iniciada", "event_replica.ready": "réplica lista",
    "event_replica.unhealthy": "réplica enferma", "event_replica.recycled": "réplica reciclada", "event_replica.restarting": "réplica reiniciándose",
    "event_replica.stopped": "réplica detenida", "event_replica.retiring": "réplica retirándose", "event_replica.removed": "réplica quitada",
    "event_replica.adopted": "réplica adoptada", "event_replica.stray": "réplica ajena", "event_replica.held": "réplica retenida",
    "event_replica.released": "réplica liberada", "event_service.scaled": "servicio escalado", "event_spec.applied": "spec aplicada",
    "event_revision.created": "revisión creada", "event_image.build": "construcción de imagen", "event_image.failed": "imagen fallida",
    "event_deployment.started": "despliegue iniciado", "event_deployment.step": "paso del despliegue",
    "event_deployment.succeeded": "despliegue completado", "event_deployment.rolled_back": "despliegue revertido",
    "event_deployment.aborted": "despliegue abortado", "event_deployment.ended": "despliegue terminado",
    "event_alert.firing": "alerta disparada", "event_alert.resolved": "alerta resuelta", "event_server.registered": "servidor registrado",
    "event_server.deregistered": "servidor dado de baja", "event_server.draining": "servidor drenando", "event_server.weighted": "peso del servidor",
    "event_server.undrained": "servidor de vuelta en rotación",
    "event_leader.elected": "líder elegido", "event_leader.lost": "liderazgo perdido", "event_store.restored": "almacén restaurado",
    "event_portero.stopped": "portero detenido", "event_autoscaler.cold_start": "arranque en frío",
    "event_endpoint.ejected": "endpoint expulsado", "event_endpoint.down": "endpoint caído",
    "event_router.adopted": "router adoptado", "event_router.listener": "router escuchando", "event_router.restarted": "router reiniciado",
    "event_router.restart_failed": "reinicio del router fallido", "event_router.upgrade": "router actualizado",
    "event_router.worker_died": "worker del router caído", "event_tls.obtained": "certificado obtenido",
    "event_tls.renewed": "certificado renovado", "event_tls.failed": "certificado fallido", "event_tls.load_failed": "certificado ilegible",
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

// A word of a closed set (a state, a strategy...) in the current language; an unknown one as it came.
export function word(prefix, value) {
  const key = `${prefix}_${value}`;
  return TEXT[lang][key] ?? TEXT.en[key] ?? String(value).replace(/[._]/g, " "); // an event kind reads as words
}

// What portero's server writes in English (deployment steps and reasons, the autoscaler's reasons, events), as
// patterns with their Spanish: `$n` is a value as it came, `{n}` a part translated in turn. Text portero did not
// write (an alert summary of the spec's own, an error of the operating system) is shown as it came.
const R = String.raw;
const N = R`[\d.e+-]+`;
const MESSAGES = [
  // deployments
  [R`rolling (\d+) replica\(s\) to revision (\d+)`, "actualización gradual de $1 réplica(s) a la revisión $2"],
  [R`starting (\d+) canary replica\(s\) of revision (\d+)`, "iniciando $1 réplica(s) canario de la revisión $2"],
  [R`starting the green group: (\d+) replica\(s\) of revision (\d+)`, "iniciando el grupo verde: $1 réplica(s) de la revisión $2"],
  [R`rolled back to revision (\d+): (.+)`, "revertido a la revisión $1: {2}"],
  [R`analysis failed: (.+)`, "el análisis falló: {1}"],
  [R`revision (\d+) had (\d+)/(\d+) ready replica\(s\) after (${N}) s`, "la revisión $1 tenía $2/$3 réplica(s) listas a los $4 s"],
  [R`revision (\d+): (\d+) ready; old replicas (\d+) -> (\d+), new (\d+) -> (\d+)`, "revisión $1: $2 listas; réplicas viejas $3 → $4, nuevas $5 → $6"],
  [R`green group ready \((\d+)/(\d+)\); all traffic switched to revision (\d+)`, "grupo verde listo ($1/$2); todo el tráfico pasó a la revisión $3"],
  [R`revision (\d+) held up for (${N}) s; stopping revision (\d+)`, "la revisión $1 aguantó $2 s; se detiene la revisión $3"],
  [R`canary step (\d+)/(\d+): (${N})% of traffic to revision (\d+)`, "paso canario $1/$2: $3% del tráfico a la revisión $4"],
  [R`canary step (\d+)/(\d+) passed \((.+)\); (${N})% next`, "paso canario $1/$2 superado ({3}); sigue el $4%"],
  [R`revision (\d+) takes all traffic`, "la revisión $1 recibe todo el tráfico"],
  [R`revision (\d+) serves; deployment took (${N}) s`, "la revisión $1 sirve; el despliegue tardó $2 s"],
  [R`portero restarted during the deployment; the old revision was kept`, "portero se reinició durante el despliegue; se mantuvo la revisión anterior"],
  [R`(.+); (\d+) request\(s\) failed on revision (\d+)`, "{1}; $2 petición(es) fallaron en la revisión $3"],
  [R`(deploy|rollback) of (\S+): revision (\d+) -> (\d+) \((\S+)\), asked by (.+)`, "{1} de $2: revisión $3 → $4 ({5}), pedido por $6"],
  [R`deploy`, "despliegue"], [R`rollback`, "reversión"],
  [R`rolling`, "gradual"], [R`blue-green`, "azul-verde"], [R`canary`, "canario"],
  [R`no analysis`, "sin análisis"],
  [R`(\d+) request\(s\) < (\d+) needed`, "$1 petición(es) < $2 necesarias"],
  [R`error rate (${N}%) > baseline (${N}%) \+ (${N}%)`, "tasa de errores $1 > base $2 + $3"],
  [R`error rate (${N}%) > (${N}%)`, "tasa de errores $1 > $2"],
  [R`error rate (${N}%) over (\d+) requests`, "tasa de errores $1 en $2 peticiones"],
  [R`p95 latency (\d+) ms > (${N})x baseline \((\d+) ms\)`, "latencia p95 $1 ms > $2x la base ($3 ms)"],
  [R`p95 latency (\d+) ms > (\d+) ms`, "latencia p95 $1 ms > $2 ms"],
  // a scale refused (control.py): the reason shown instead of "Done"
  [R`(\S+): the autoscaler sets its count \(autoscale\.enabled\), and would undo this at its next pass\. Bound it with (\S+), or turn it off for this service \((\S+): false\) and apply`,
    "$1: el autoescalado fija su número de réplicas (autoscale.enabled) y desharía esto en su próxima pasada. Acótalo con $2, o apágalo para este servicio ($3: false) y aplica"],
  [R`(\S+): deployment (\S+) is running; scale when it has ended`, "$1: el despliegue $2 está en curso; escala cuando termine"],
  [R`(\S+): (\d+) replicas is outside the spec's limits (\d+)\.\.(\d+) \((\S+)\)`, "$1: $2 réplicas está fuera de los límites del spec $3..$4 ($5)"],
  // the autoscaler (a manual or automatic scale first: its reason holds the autoscaler's)
  [R`scaled from (\d+) to (\d+): (.+)`, "escalado de $1 a $2: {3}"],
  [R`scaled from (\d+) to (\d+)`, "escalado de $1 a $2"],
  [R`(.+): (\d+) → (\d+) \(panic\) \((.+)\)`, "{1}: $2 → $3 (pánico) ({4})"],
  [R`(.+): (\d+) → (\d+) \(panic\)`, "{1}: $2 → $3 (pánico)"],
  [R`(\d+) request\(s\) waiting at zero replicas: 0 → (\d+)`, "$1 petición(es) esperando sin réplicas: 0 → $2"],
  [R`min is (\d+): 0 → (\d+)`, "el mínimo es $1: 0 → $2"],
  [R`(.+): (\d+) → (\d+) \((.+)\)`, "{1}: $2 → $3 ({4})"],
  [R`(.+): (\d+) → (\d+)`, "{1}: $2 → $3"],
  [R`(.+); held at (\d+): (.+)`, "{1}; se mantiene en $2: {3}"],
  [R`no request: stay at zero`, "sin peticiones: se queda en cero"],
  [R`(.+): stay at (\d+)`, "{1}: se queda en $2"],
  [R`burst: (.+)`, "ráfaga: {1}"],
  [R`no request for (\d+) s >= (${N}) s`, "sin peticiones desde hace $1 s >= $2 s"],
  [R`cpu (\d+)% within (${N})\.\.(${N})%`, "cpu $1% dentro de $2..$3%"],
  [R`cpu (\d+)% ([<>]) (${N})%`, "cpu $1% $2 $3%"],
  [R`(.+) vs target (.+)`, "{1} frente al objetivo {2}"],
  [R`no CPU reading`, "sin lectura de CPU"], [R`no signal`, "sin señal"],
  [R`panic blocks scale-down`, "el pánico impide bajar"],
  [R`scale-down cooldown \((${N}) s\)`, "espera tras bajar ($1 s)"],
  [R`scale-up cooldown \((${N}) s\)`, "espera tras subir ($1 s)"],
  [R`largest recommendation of the last (${N}) s is (\d+)`, "la mayor recomendación de los últimos $1 s es $2"],
  [R`limits (\d+)\.\.(\d+)`, "límites $1..$2"],
  [R`rate limit: at most (\d+) within (${N}) s`, "límite de ritmo: como mucho $1 en $2 s"],
  [R`autoscaler: (.+)`, "autoescalado: {1}"],
  // events
  [R`started on (\S+) as pid (\d+)`, "iniciada en $1 con pid $2"],
  [R`passed its health check (${N}) s after start`, "pasó su chequeo de salud $1 s después de iniciar"],
  [R`healthy again`, "sana de nuevo"],
  [R`failed (\d+) health checks in a row`, "falló $1 chequeos de salud seguidos"],
  [R`(.+): restarting it`, "{1}: se reinicia"],
  [R`stopped and removed \((.+)\)`, "detenida y quitada ({1})"],
  [R`stopped \((.+)\)`, "detenida ({1})"],
  [R`(.+) after (${N}) s; restart #(\d+) in (${N}) s`, "{1} tras $2 s; reinicio n.º $3 en $4 s"],
  [R`could not start: (.+)`, "no pudo iniciar: $1"],
  [R`exited with code (-?\d+)`, "terminó con código $1"],
  [R`killed by signal (\d+)`, "terminada por la señal $1"],
  [R`exited \(status unknown\)`, "terminó (estado desconocido)"],
  [R`revision (\d+) of (\S+) is ready`, "la revisión $1 de $2 está lista"],
  [R`scaling revision (\d+) of (\S+) down to (\d+)`, "reduciendo la revisión $1 de $2 a $3"],
  [R`scaling revision (\d+) of (\S+) to (\d+)`, "escalando la revisión $1 de $2 a $3"],
  [R`adopted: still running as pid (\d+) on port (\d+)`, "adoptada: sigue corriendo con pid $1 en el puerto $2"],
  [R`stopped by the operator`, "detenida por el operador"],
  [R`started by the operator`, "iniciada por el operador"],
  [R`revision (\d+) is no longer kept; replaced by the current revision`, "la revisión $1 ya no se guarda; reemplazada por la actual"],
  [R`stopped (\d+) replica\(s\)`, "$1 réplica(s) detenidas"],
  [R`(\S+) draining`, "$1 drenando"],
  [R`(\S+) back in rotation`, "$1 vuelve a recibir peticiones"],
  // summaries of the built-in alert rules (monitor/rules.py)
  [R`host CPU at (${N})% over the last minute \(threshold (${N})%, ALERT_THRESHOLD_CPU\)`, "CPU del host al $1% en el último minuto (umbral $2%, ALERT_THRESHOLD_CPU)"],
  [R`host memory at (${N})% \(threshold (${N})%, ALERT_THRESHOLD_MEMORY\)`, "memoria del host al $1% (umbral $2%, ALERT_THRESHOLD_MEMORY)"],
  [R`replica (\S+) of (\S+) uses (${N})% of a core \(threshold (${N})%\)`, "la réplica $1 de $2 usa el $3% de un núcleo (umbral $4%)"],
  [R`(\S+) has (${N}) replica\(s\) fewer ready than desired`, "a $1 le faltan $2 réplica(s) listas"],
  [R`(\S+): no endpoint takes requests \(all draining or at weight 0\); every request waits, then gets 503 \(\`portero undrain\`\)`, "$1: ningún endpoint recibe peticiones (todos drenando o con peso 0); cada petición espera y luego recibe 503 (`portero undrain`)"],
  [R`replica (\S+) of (\S+) restarted (${N}) times in 10 minutes`, "la réplica $1 de $2 se reinició $3 veces en 10 minutos"],
  [R`(\S+) answers (${N}) of its requests with 5xx \(threshold (${N})\)`, "$1 responde con 5xx a $2 de sus peticiones (umbral $3)"],
  [R`Redis \(store.redis_url\) does not answer: routing goes on, controllers are paused`, "Redis (store.redis_url) no responde: el enrutado sigue, los controladores están en pausa"],
  [R`(\S+) p95 latency (${N}) s \(threshold (${N}) s\)`, "latencia p95 de $1: $2 s (umbral $3 s)"],
  // the spec
  [R`no change`, "sin cambios"],
  [R`portero up \(([^()]+)\)`, "portero up ($1)"],
  [R`applied from (.+)`, "aplicada desde $1"],
  [R`revision (\d+) \((\w+)\)`, "revisión $1 ($2)"],
  [R`(\S+): (\d+) replica\(s\)`, "$1: $2 réplica(s)"],
  [R`(\S+): revision (\d+)`, "$1: revisión $2"],
  [R`(\S+): removed`, "$1: quitado"],
  [R`revision (\d+)`, "revisión $1"],
  // last: a message made of parts, each translated in turn
  [R`(.+); (.+)`, "{1}; {2}"],
  [R`(.+): (.+)`, "{1}: {2}"],
].map(([pattern, es]) => [new RegExp(`^${pattern}$`), es]);

export function message(text) {
  if (lang !== "es" || typeof text !== "string") return text;
  for (const [pattern, es] of MESSAGES) {
    const found = pattern.exec(text);
    if (found) return es.replace(/\$(\d)|\{(\d)\}/g, (_, plain, nested) => (plain ? found[plain] : message(found[nested])));
  }
  return text;
}

export function translate(root) {
  document.documentElement.lang = lang;
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
}
