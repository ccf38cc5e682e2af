from portero.cli.main import app

app()
