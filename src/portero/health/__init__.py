"""Health checks: the rise/fall verdict (pure) and the HTTP prober that feeds it."""

import portero

# The User-Agent of portero's health checks, as kubelet's probes send `kube-probe/1.x`: an access log names it,
# so `portero logs` can leave those lines out (a check every 2 s per replica would bury everything else).
USER_AGENT = f"portero-health/{portero.__version__}"
USER_AGENT_MARK = "portero-health/"
